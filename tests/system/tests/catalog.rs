//! The catalog through the front door: who may change what, values refused
//! naming their field, the category tree, search (relevance, filters, sorts,
//! stable pages), stock on the product, and no stale read after a write.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use emporium_system::{Stack, problem};
use reqwest::Method;
use serde_json::{Value, json};

async fn json_of(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    response.json().await.unwrap()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn every_write_route_checks_role_and_ownership() {
    let stack = Stack::with_catalog().await;
    let (seller, rival, customer, admin) = (
        stack.access("seller").await,
        stack.access("seller").await,
        stack.access("customer").await,
        stack.admin().await,
    );
    let body = json!({ "name": "Desk lamp", "price": { "amount": 2500, "currency": "EUR" } });

    // POST /products: sellers and admins.
    problem(stack.request(Method::POST, "/api/v1/products").json(&body).send().await.unwrap(), 401).await;
    problem(stack.send_as(&customer, Method::POST, "/api/v1/products", &body).await, 403).await;
    let lamp = json_of(stack.send_as(&seller, Method::POST, "/api/v1/products", &body).await, 201).await;
    assert_eq!(
        json_of(stack.send_as(&admin, Method::POST, "/api/v1/products", &body).await, 201).await["name"],
        "Desk lamp"
    );
    let path = format!("/api/v1/products/{}", lamp["id"].as_str().unwrap());

    // PATCH: the owner and admins.
    let rename = json!({ "name": "Desk lamp, brass" });
    problem(stack.request(Method::PATCH, &path).json(&rename).send().await.unwrap(), 401).await;
    problem(stack.send_as(&customer, Method::PATCH, &path, &rename).await, 403).await;
    problem(stack.send_as(&rival, Method::PATCH, &path, &rename).await, 403).await;
    assert_eq!(
        json_of(stack.send_as(&seller, Method::PATCH, &path, &rename).await, 200).await["name"],
        "Desk lamp, brass"
    );
    let repriced = json_of(
        stack.send_as(&admin, Method::PATCH, &path, &json!({ "price": { "amount": 2700, "currency": "EUR" } })).await,
        200,
    )
    .await;
    assert_eq!(
        (repriced["price"]["amount"].as_i64(), repriced["name"].as_str()),
        (Some(2700), Some("Desk lamp, brass"))
    );
    assert_eq!(repriced["seller_id"], lamp["seller_id"], "an admin's edit keeps the seller");

    // PUT stock: the owner and admins.
    let stock_path = format!("{path}/stock");
    // Inventory learns of the product from the catalog's event a moment after
    // it is created, and answers 503 until then: wait that out first.
    let three = json!({ "quantity": 3 });
    let rival_put = || stack.send_as(&rival, Method::PUT, &stock_path, &three);
    let mut refused = rival_put().await;
    while refused.status() == 503 {
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        refused = rival_put().await;
    }
    problem(refused, 403).await;
    problem(stack.send_as(&customer, Method::PUT, &stock_path, &json!({ "quantity": 3 })).await, 403).await;
    assert_eq!(stack.stock(&seller, lamp["id"].as_str().unwrap(), 3).await["available"], 3);
    assert_eq!(stack.stock(&admin, lamp["id"].as_str().unwrap(), 4).await["on_hand"], 4);

    // POST /categories: admins only.
    let books = json!({ "name": "Books" });
    problem(stack.request(Method::POST, "/api/v1/categories").json(&books).send().await.unwrap(), 401).await;
    problem(stack.send_as(&seller, Method::POST, "/api/v1/categories", &books).await, 403).await;
    json_of(stack.send_as(&admin, Method::POST, "/api/v1/categories", &books).await, 201).await;
    problem(stack.send_as(&admin, Method::POST, "/api/v1/categories", &json!({ "name": "books" })).await, 409).await;

    // DELETE: the owner and admins; then it is gone for everyone.
    problem(stack.send_as(&rival, Method::DELETE, &path, &json!({})).await, 403).await;
    problem(stack.request(Method::DELETE, &path).send().await.unwrap(), 401).await;
    assert_eq!(stack.send_as(&seller, Method::DELETE, &path, &json!({})).await.status(), 204);
    problem(stack.request(Method::GET, &path).send().await.unwrap(), 404).await;
    problem(stack.send_as(&admin, Method::PATCH, &path, &rename).await, 404).await;
    // Inventory delists it when the deletion's event reaches it, a moment later.
    let delisted = emporium_test_harness::eventually(Duration::from_secs(20), || async {
        stack.send_as(&seller, Method::PUT, &stock_path, &json!({ "quantity": 1 })).await.status() == 404
    })
    .await;
    assert!(delisted, "stock of a deleted product can still be set");
    problem(stack.send_as(&seller, Method::PUT, &stock_path, &json!({ "quantity": 1 })).await, 404).await;
}

#[tokio::test]
async fn invalid_values_get_422_naming_the_field() {
    let stack = Stack::with_catalog().await;
    let seller = stack.access("seller").await;
    let product = |name: Value, amount: Value, currency: &str| json!({ "name": name, "price": { "amount": amount, "currency": currency } });
    for (body, field) in [
        (product(json!("Lamp"), json!(-1), "EUR"), "price.amount"),
        (product(json!("Lamp"), json!(12.5), "EUR"), "price.amount"),
        (product(json!("Lamp"), json!(100), "eur"), "price.currency"),
        (product(json!("Lamp"), json!(10_000_000_000_i64), "EUR"), "price.amount"),
        (product(json!("   "), json!(100), "EUR"), "name"),
        (product(json!("x".repeat(201)), json!(100), "EUR"), "name"),
        (
            json!({ "name": "Lamp", "description": "d".repeat(5001), "price": { "amount": 1, "currency": "EUR" } }),
            "description",
        ),
        (
            json!({ "name": "Lamp", "price": { "amount": 1, "currency": "EUR" }, "category_id": uuid::Uuid::now_v7() }),
            "category_id",
        ),
    ] {
        let body = problem(stack.send_as(&seller, Method::POST, "/api/v1/products", &body).await, 422).await;
        assert_eq!(body["field"], field, "{body}");
    }
    let lamp = stack.product(&seller, "Lamp", 100).await;
    let stock_path = format!("/api/v1/products/{}/stock", lamp["id"].as_str().unwrap());
    let body = problem(stack.send_as(&seller, Method::PUT, &stock_path, &json!({ "quantity": -1 })).await, 422).await;
    assert_eq!(body["field"], "quantity");
    for (query, field) in [
        ("min_price=cheap", "min_price"),
        ("sort=random", "sort"),
        ("limit=500", "limit"),
        ("cursor=forged", "cursor"),
        ("min_price=9&max_price=1", "max_price"),
    ] {
        let body =
            problem(stack.request(Method::GET, &format!("/api/v1/products?{query}")).send().await.unwrap(), 422).await;
        assert_eq!(body["field"], field, "{query}: {body}");
    }
}

#[tokio::test]
async fn categories_form_a_tree_and_a_category_filters_its_subtree() {
    let stack = Stack::with_catalog().await;
    let (admin, seller) = (stack.admin().await, stack.access("seller").await);
    let category = |name: &str, parent: Option<&Value>| {
        let body = json!({ "name": name, "parent_id": parent.map(|p| p["id"].clone()) });
        let body = if parent.is_none() { json!({ "name": name }) } else { body };
        let (stack, admin) = (&stack, &admin);
        async move { json_of(stack.send_as(admin, Method::POST, "/api/v1/categories", &body).await, 201).await }
    };
    let electronics = category("Electronics", None).await;
    let audio = category("Audio", Some(&electronics)).await;
    let headphones = category("Headphones", Some(&audio)).await;
    let garden = category("Garden", None).await;
    assert_eq!(
        headphones["path"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect::<Vec<_>>(),
        ["Electronics", "Audio", "Headphones"]
    );

    let tree = json_of(stack.request(Method::GET, "/api/v1/categories").send().await.unwrap(), 200).await;
    let audio_node = tree.as_array().unwrap().iter().find(|c| c["id"] == audio["id"]).unwrap();
    assert_eq!(audio_node["parent_id"], electronics["id"]);
    assert_eq!(audio_node["children"], json!([headphones["id"]]));

    let in_category = |name: &'static str, category: &Value| {
        let body =
            json!({ "name": name, "price": { "amount": 999, "currency": "EUR" }, "category_id": category["id"] });
        let (stack, seller) = (&stack, &seller);
        async move { json_of(stack.send_as(seller, Method::POST, "/api/v1/products", &body).await, 201).await }
    };
    let speaker = in_category("Speaker", &audio).await;
    let earbuds = in_category("Earbuds", &headphones).await;
    let _rake = in_category("Rake", &garden).await;
    let search = |category: &Value| {
        let path = format!("/api/v1/products?category={}", category["id"].as_str().unwrap());
        let stack = &stack;
        async move { json_of(stack.request(Method::GET, &path).send().await.unwrap(), 200).await }
    };
    let found: HashSet<String> = ids(&search(&electronics).await).into_iter().collect();
    assert_eq!(
        found,
        HashSet::from([speaker["id"].as_str().unwrap().to_owned(), earbuds["id"].as_str().unwrap().to_owned()])
    );
    assert_eq!(ids(&search(&headphones).await), [earbuds["id"].as_str().unwrap()]);

    // Moving a product to another category moves it in search too.
    let path = format!("/api/v1/products/{}", earbuds["id"].as_str().unwrap());
    json_of(stack.send_as(&seller, Method::PATCH, &path, &json!({ "category_id": garden["id"] })).await, 200).await;
    assert!(ids(&search(&electronics).await).iter().all(|id| id != earbuds["id"].as_str().unwrap()));
    let out = json_of(stack.send_as(&seller, Method::PATCH, &path, &json!({ "category_id": null })).await, 200).await;
    assert!(out.get("category_id").is_none(), "{out}");
}

#[tokio::test]
async fn search_ranks_stems_filters_and_sorts() {
    let stack = Stack::with_catalog().await;
    let (seller, other) = (stack.access("seller").await, stack.access("seller").await);
    let create = |token: &str, name: &str, description: &str, amount: i64| {
        let body =
            json!({ "name": name, "description": description, "price": { "amount": amount, "currency": "EUR" } });
        let (stack, token) = (&stack, token.to_owned());
        async move { json_of(stack.send_as(&token, Method::POST, "/api/v1/products", &body).await, 201).await }
    };
    let in_name = create(&seller, "Reading lamp", "Warm light for books", 3000).await;
    let in_text = create(&seller, "Desk organiser", "Room beside the lamp for pens", 1500).await;
    let elsewhere = create(&other, "Garden hose", "Twenty metres", 2000).await;
    let id = |p: &Value| p["id"].as_str().unwrap().to_owned();
    let get = |query: String| {
        let stack = &stack;
        async move {
            json_of(stack.request(Method::GET, &format!("/api/v1/products?{query}")).send().await.unwrap(), 200).await
        }
    };

    // Relevance: a match in the name outranks one in the description; stemming finds "lamps".
    assert_eq!(ids(&get("q=lamps".into()).await), [id(&in_name), id(&in_text)]);
    assert_eq!(ids(&get("q=hose".into()).await), [id(&elsewhere)]);
    assert!(ids(&get("q=bicycle".into()).await).is_empty());
    // Sorts.
    assert_eq!(ids(&get("sort=price_asc".into()).await), [id(&in_text), id(&elsewhere), id(&in_name)]);
    assert_eq!(ids(&get("sort=price_desc".into()).await), [id(&in_name), id(&elsewhere), id(&in_text)]);
    assert_eq!(ids(&get("sort=newest".into()).await), [id(&elsewhere), id(&in_text), id(&in_name)]);
    assert_eq!(ids(&get("sort=rating".into()).await).len(), 3, "unrated products still listed");
    // Filters.
    assert_eq!(ids(&get("min_price=1600&max_price=2500".into()).await), [id(&elsewhere)]);
    let seller_id = in_name["seller_id"].as_str().unwrap();
    assert_eq!(ids(&get(format!("seller={seller_id}&sort=price_asc")).await), [id(&in_text), id(&in_name)]);
    assert!(ids(&get("in_stock=true".into()).await).is_empty());
    stack.stock(&seller, &id(&in_text), 2).await;
    let stocked = emporium_test_harness::eventually(Duration::from_secs(10), || async {
        ids(&get("in_stock=true".into()).await) == [id(&in_text)]
    })
    .await;
    assert!(stocked, "stock never reached the catalog");
    let shown =
        json_of(stack.request(Method::GET, &format!("/api/v1/products/{}", id(&in_text))).send().await.unwrap(), 200)
            .await;
    assert_eq!(shown["stock"], json!({ "on_hand": 2, "reserved": 0, "available": 2 }));
    assert_eq!(shown["rating"], json!({ "count": 0 }));
}

#[tokio::test]
async fn pages_stay_stable_while_products_are_added() {
    let stack = Stack::with_catalog().await;
    let seller = stack.access("seller").await;
    let mut before = HashSet::new();
    for i in 0..30 {
        before
            .insert(stack.product(&seller, &format!("Teapot {i}"), 1000 + i).await["id"].as_str().unwrap().to_owned());
    }
    for query in ["q=teapot", "sort=newest", "sort=price_asc", "q=teapot&sort=price_desc"] {
        // Insert more while paging, from another task.
        let adding = {
            let (base, http, seller) = (stack.base.clone(), stack.http.clone(), seller.clone());
            tokio::spawn(async move {
                for i in 0..10 {
                    let body = json!({ "name": format!("Teapot new {i}"), "price": { "amount": 1000 + i, "currency": "EUR" } });
                    let response = http
                        .post(format!("{base}/api/v1/products"))
                        .bearer_auth(&seller)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 201);
                }
            })
        };
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/products?{query}&limit=7");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = json_of(stack.request(Method::GET, &path).send().await.unwrap(), 200).await;
            seen.extend(ids(&page));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        adding.await.unwrap();
        let unique: HashSet<String> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "{query}: a product was shown twice");
        assert!(before.is_subset(&unique), "{query}: a product present throughout was skipped");
    }
}

#[tokio::test]
async fn an_acknowledged_update_is_never_followed_by_a_stale_read() {
    let stack = Stack::with_catalog().await;
    let seller = stack.access("seller").await;
    let lamp = stack.product(&seller, "Lamp", 100).await;
    let path = format!("/api/v1/products/{}", lamp["id"].as_str().unwrap());
    for amount in 101..131 {
        // Read (and cache) it, change it, read it again at once.
        json_of(stack.request(Method::GET, &path).send().await.unwrap(), 200).await;
        let body = json!({ "price": { "amount": amount, "currency": "EUR" } });
        json_of(stack.send_as(&seller, Method::PATCH, &path, &body).await, 200).await;
        let read = json_of(stack.request(Method::GET, &path).send().await.unwrap(), 200).await;
        assert_eq!(read["price"]["amount"], amount, "stale read after an acknowledged update");
    }
}

#[tokio::test]
async fn another_instance_drops_its_cached_copy_when_the_product_changes() {
    let stack = Stack::with_catalog().await;
    stack.start_another_catalog().await;
    let seller = stack.access("seller").await;
    let lamp = stack.product(&seller, "Lamp", 100).await;
    let path = format!("/api/v1/products/{}", lamp["id"].as_str().unwrap());
    let read = || async {
        json_of(stack.request(Method::GET, &path).send().await.unwrap(), 200).await["price"]["amount"].clone()
    };
    for amount in [200, 300, 400] {
        // Warm both instances' caches (the queue group spreads the reads).
        for _ in 0..20 {
            read().await;
        }
        let body = json!({ "price": { "amount": amount, "currency": "EUR" } });
        json_of(stack.send_as(&seller, Method::PATCH, &path, &body).await, 200).await;
        // The instance that wrote answers the new price at once; the other
        // follows the product_updated event, well within its cache's 60 s.
        let fresh = emporium_test_harness::eventually(Duration::from_secs(5), || async {
            for _ in 0..20 {
                if read().await != amount {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(fresh, "an instance kept serving the old price");
    }
}
