//! Sample products for development, tests and benchmarks, written straight
//! into the catalog's tables in a few statements (100,000 take seconds).

use sqlx::PgPool;
use uuid::Uuid;

/// Products named material + noun ("Brass teapot no. 7"), described with a
/// colour and another noun, over 50 categories and 100 sellers, a quarter of them in stock, prices spread over 0–99,999,
/// up to six reviews' worth of rating each (as a sum of stars, like real reviews leave it).
pub async fn seed(pool: &PgPool, products: usize) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO categories (id, parent_id, name, path)
         SELECT gen_random_uuid(), NULL, 'Category ' || n, '{}' FROM generate_series(1, 50) AS n
         ON CONFLICT DO NOTHING",
    )
    .execute(pool)
    .await?;
    sqlx::query("UPDATE categories SET path = ARRAY[id] WHERE path = '{}'").execute(pool).await?;
    // UUIDv7 ids made here, in creation order, as the catalog makes them.
    let ids: Vec<Uuid> = (0..products).map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "WITH words(nouns, materials, colours) AS (SELECT
                ARRAY['lamp','chair','teapot','kettle','rug','mirror','clock','vase','desk','sofa',
                      'blanket','pillow','candle','shelf','stool','basket','bowl','mug','plate','towel'],
                ARRAY['brass','oak','walnut','linen','wool','steel','glass','ceramic','bamboo','marble',
                      'copper','cotton','leather','pine','velvet','stone','silver','clay','cedar','jute'],
                ARRAY['red','blue','green','amber','ivory','slate','teal','plum','ochre','navy','olive','coral',
                      'sand','rust','mint','pearl','smoke','honey','berry','frost','moss','dune','ink','rose','ash']),
              cats AS (SELECT array_agg(id ORDER BY name) AS ids FROM categories),
              sellers AS (SELECT array_agg(gen_random_uuid()) AS ids FROM generate_series(1, 100))
         INSERT INTO products (id, seller_id, name, description, price_amount, currency, category_id, category_path,
                               version, on_hand, reserved, rating_avg, rating_count, rating_sum, created_at, updated_at)
         SELECT u.id, sellers.ids[1 + n % 100],
                initcap(words.materials[1 + (n / 20) % 20]) || ' ' || words.nouns[1 + n % 20] || ' no. ' || n,
                'A ' || words.colours[1 + (n / 400) % 25] || ' piece that goes with any '
                    || words.nouns[1 + (n / 7) % 20] || '.',
                (n * 7919) % 100000, 'EUR', cats.ids[1 + n % 50], ARRAY[cats.ids[1 + n % 50]],
                1, CASE WHEN (n / 3) % 4 = 0 THEN 10 ELSE 0 END, 0,
                CASE WHEN r.count = 0 THEN 0 ELSE r.sum::float8 / r.count END, r.count, r.sum, now(), now()
         FROM (SELECT id, n::int AS n FROM unnest($1::uuid[]) WITH ORDINALITY AS o(id, n)) AS u
              CROSS JOIN LATERAL (SELECT u.n % 7 AS count,
                                         round((1 + (u.n % 41) / 10.0) * (u.n % 7))::bigint AS sum) AS r,
              words, cats, sellers",
    )
    .bind(ids)
    .execute(pool)
    .await?;
    // VACUUM, not only ANALYZE: it also moves the bulk insert out of the GIN
    // indexes' pending lists, which the planner would otherwise shy away from.
    sqlx::query("VACUUM ANALYZE products").execute(pool).await?;
    Ok(())
}
