//! The contract tests: every example against its JSON Schema and its Rust type,
//! the published schemas against their digests, and the AsyncAPI document
//! against the subject registry.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use emporium_schemas::commands::{
    cart, catalog as catalog_cmd, identity as identity_cmd, inventory as inventory_cmd,
    notification as notification_cmd, order as order_cmd, shipping as shipping_cmd,
};
use emporium_schemas::events::{catalog, identity, inventory, order, payment, shipping};
use emporium_schemas::{Command, CommandEnvelope, Envelope, Event, registry};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every file below `json/`, as paths relative to it, sorted.
fn schema_files() -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let base = root().join("json");
    let mut files = Vec::new();
    walk(&base, &base, &mut files);
    files.sort();
    files
}

const BASE_URI: &str = "https://schemas.emporium.dev/";

/// A validator for one schema file, resolving `$ref`s among all files offline.
struct Schemas {
    registry: jsonschema::Registry<'static>,
}

impl Schemas {
    fn load() -> Self {
        let mut builder = jsonschema::Registry::new();
        for file in schema_files() {
            let schema = read_json(&root().join("json").join(&file));
            let id = schema["$id"].as_str().unwrap_or_else(|| panic!("{file} has no $id")).to_owned();
            assert_eq!(id, format!("{BASE_URI}{file}"), "{file}: $id must be its path below {BASE_URI}");
            builder = builder.add(id, schema).unwrap();
        }
        Self { registry: builder.prepare().unwrap() }
    }

    fn validator(&self, schema_file: &str) -> jsonschema::Validator {
        jsonschema::options()
            .with_registry(&self.registry)
            .should_validate_formats(true)
            .build(&serde_json::json!({ "$ref": format!("{BASE_URI}{schema_file}") }))
            .unwrap_or_else(|e| panic!("{schema_file} does not compile: {e}"))
    }
}

/// Decodes a message into its Rust type and encodes it back.
type Codec = fn(&[u8]) -> Result<(Vec<u8>, bool), String>;

fn event_codec<D: Event + PartialEq>(bytes: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let decoded = Envelope::<D>::from_json(bytes).map_err(|e| e.to_string())?;
    let encoded = decoded.to_json().map_err(|e| e.to_string())?;
    let again = Envelope::<D>::from_json(&encoded).map_err(|e| e.to_string())?;
    Ok((encoded, again == decoded))
}

fn command_codec<C: Command + PartialEq>(bytes: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let decoded = CommandEnvelope::<C>::from_json(bytes).map_err(|e| e.to_string())?;
    let encoded = decoded.to_json().map_err(|e| e.to_string())?;
    let again = CommandEnvelope::<C>::from_json(&encoded).map_err(|e| e.to_string())?;
    Ok((encoded, again == decoded))
}

/// The Rust type of every registered message, by its examples folder name.
fn codecs() -> BTreeMap<String, Codec> {
    fn event<D: Event + PartialEq>() -> (String, Codec) {
        (format!("{}.v{}", D::TYPE.type_name, D::TYPE.version), event_codec::<D>)
    }
    fn command<C: Command + PartialEq>() -> (String, Codec) {
        (format!("{}.v{}", C::TYPE.type_name, C::TYPE.version), command_codec::<C>)
    }
    BTreeMap::from([
        event::<order::OrderPlaced>(),
        event::<order::OrderConfirmed>(),
        event::<order::OrderCancelled>(),
        event::<order::OrderShipped>(),
        event::<order::OrderDelivered>(),
        event::<inventory::InventoryReserved>(),
        event::<inventory::InventoryRejected>(),
        event::<inventory::InventoryReleased>(),
        event::<inventory::StockChanged>(),
        event::<catalog::ProductCreated>(),
        event::<catalog::ProductUpdated>(),
        event::<catalog::ProductDeleted>(),
        event::<catalog::ReviewAdded>(),
        event::<payment::PaymentAuthorized>(),
        event::<payment::PaymentFailed>(),
        event::<payment::PaymentCaptured>(),
        event::<payment::PaymentCaptureFailed>(),
        event::<payment::PaymentVoided>(),
        event::<payment::PaymentRefunded>(),
        event::<shipping::ShippingCreated>(),
        event::<shipping::ShippingShipped>(),
        event::<shipping::ShippingDelivered>(),
        event::<shipping::ShippingCancelled>(),
        command::<cart::GetCart>(),
        command::<cart::AddItem>(),
        command::<cart::SetQuantity>(),
        command::<cart::RemoveItem>(),
        command::<cart::Checkout>(),
        command::<order_cmd::PlaceOrder>(),
        command::<order_cmd::CancelOrder>(),
        command::<order_cmd::GetOrder>(),
        command::<order_cmd::ListOrders>(),
        command::<inventory_cmd::SetStock>(),
        command::<inventory_cmd::GetStock>(),
        command::<catalog_cmd::CreateProduct>(),
        command::<catalog_cmd::UpdateProduct>(),
        command::<catalog_cmd::DeleteProduct>(),
        command::<catalog_cmd::GetProduct>(),
        command::<catalog_cmd::SearchProducts>(),
        command::<catalog_cmd::ListCategories>(),
        command::<catalog_cmd::CreateCategory>(),
        command::<catalog_cmd::AddReview>(),
        command::<catalog_cmd::ListReviews>(),
        command::<shipping_cmd::ShipShipment>(),
        command::<shipping_cmd::DeliverShipment>(),
        command::<notification_cmd::ListNotifications>(),
        command::<notification_cmd::ReadNotification>(),
        event::<identity::UserRegistered>(),
        command::<identity_cmd::Register>(),
        command::<identity_cmd::Login>(),
        command::<identity_cmd::Refresh>(),
        command::<identity_cmd::Logout>(),
        command::<identity_cmd::GetProfile>(),
        command::<identity_cmd::UpdateProfile>(),
        command::<identity_cmd::AddAddress>(),
        command::<identity_cmd::ListAddresses>(),
        command::<identity_cmd::DeleteAddress>(),
        command::<identity_cmd::GetKeys>(),
    ])
}

/// `<type>.v<N>` → schema file, for every registered event and command.
fn registered() -> BTreeMap<String, &'static str> {
    let events = registry::events().iter().map(|e| (format!("{}.v{}", e.type_name, e.version), e.schema_file));
    let commands = registry::commands().iter().map(|c| (format!("{}.v{}", c.type_name, c.version), c.schema_file));
    events.chain(commands).collect()
}

fn examples(message: &str, validity: &str) -> Vec<(String, Vec<u8>)> {
    let dir = root().join("examples").join(message).join(validity);
    let mut found: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|_| panic!("{} is missing: every message needs valid and invalid examples", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), fs::read(&path).unwrap())
        })
        .collect();
    found.sort();
    assert!(!found.is_empty(), "{} has no examples", dir.display());
    found
}

#[test]
fn every_registered_message_has_a_rust_type_a_schema_and_examples() {
    let registered = registered();
    let codecs = codecs();
    assert_eq!(registered.keys().collect::<Vec<_>>(), codecs.keys().collect::<Vec<_>>());
    let files: BTreeSet<String> = schema_files().into_iter().collect();
    for (message, schema_file) in &registered {
        assert!(files.contains(*schema_file), "{message}: {schema_file} is missing");
        examples(message, "valid");
        examples(message, "invalid");
    }
    let example_dirs: BTreeSet<String> = fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let registered_names: BTreeSet<String> = registered.keys().cloned().collect();
    assert_eq!(example_dirs, registered_names, "examples/ and the registry must name the same messages");
}

#[test]
fn every_valid_example_validates_deserializes_and_round_trips() {
    let schemas = Schemas::load();
    for (message, codec) in codecs() {
        let validator = schemas.validator(registered()[&message]);
        for (name, bytes) in examples(&message, "valid") {
            let original: Value = serde_json::from_slice(&bytes).unwrap();
            let errors: Vec<String> = validator.iter_errors(&original).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{message}/valid/{name} breaks its schema: {errors:?}");

            let (encoded, stable) =
                codec(&bytes).unwrap_or_else(|e| panic!("{message}/valid/{name} refused by its type: {e}"));
            assert!(stable, "{message}/valid/{name} changes when decoded again");
            let encoded: Value = serde_json::from_slice(&encoded).unwrap();
            assert!(validator.is_valid(&encoded), "{message}/valid/{name}: the re-encoded message breaks the schema");
            // Unknown optional fields are accepted and dropped (forward compatibility);
            // everything else comes back exactly as it came in.
            if !name.starts_with("with-an-unknown") {
                assert_eq!(encoded, original, "{message}/valid/{name} does not round-trip");
            }
        }
    }
}

#[test]
fn every_invalid_example_is_refused_by_schema_and_type_alike() {
    let schemas = Schemas::load();
    let mut accepted = Vec::new();
    for (message, codec) in codecs() {
        let validator = schemas.validator(registered()[&message]);
        for (name, bytes) in examples(&message, "invalid") {
            let instance: Value = serde_json::from_slice(&bytes).unwrap();
            if validator.is_valid(&instance) {
                accepted.push(format!("{message}/invalid/{name} passes the schema"));
            }
            if codec(&bytes).is_ok() {
                accepted.push(format!("{message}/invalid/{name} is accepted by the Rust type"));
            }
        }
    }
    assert!(accepted.is_empty(), "invalid examples accepted:\n{}", accepted.join("\n"));
}

/// `DIGESTS`: `<sha256>  <path below json/>`, one line per published schema.
fn published_digests() -> BTreeMap<String, String> {
    fs::read_to_string(root().join("DIGESTS"))
        .unwrap()
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (digest, file) = line.split_once("  ").unwrap_or_else(|| panic!("bad DIGESTS line {line:?}"));
            (file.to_owned(), digest.to_owned())
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

const FROZEN: &str = "\
Published schemas are frozen: consumers in production rely on them.
 - A new schema file: add the line above to schemas/DIGESTS.
 - Only new OPTIONAL properties added (never required, never a changed type,
   enum, pattern or limit): this is allowed in place; replace the file's line
   in schemas/DIGESTS with the one above and say so in the commit message.
 - Anything else is a breaking change: restore the file and publish the new
   shape side by side as <type>.v<N+1>.json (a new EventType/CommandType with
   version N+1, examples/<type>.v<N+1>/, an asyncapi.json channel), keep
   emitting v<N> until every consumer has migrated, and never edit v<N>.
 - A published schema is never deleted while anything may still send it.";

#[test]
fn published_schemas_cannot_change_silently() {
    let published = published_digests();
    let files = schema_files();
    for file in &files {
        let actual = sha256_hex(&fs::read(root().join("json").join(file)).unwrap());
        match published.get(file) {
            None => panic!("{file} is not in schemas/DIGESTS.\n{actual}  {file}\n{FROZEN}"),
            Some(expected) if *expected != actual => {
                panic!("{file} changed since it was published.\n{actual}  {file}\n{FROZEN}")
            }
            Some(_) => {}
        }
    }
    for file in published.keys() {
        assert!(files.contains(file), "{file} was published and is gone.\n{FROZEN}");
    }
}

/// `address` → schema file of every channel in `asyncapi.json`.
fn asyncapi_channels() -> BTreeMap<String, String> {
    let doc = read_json(&root().join("asyncapi.json"));
    assert_eq!(doc["asyncapi"], "3.0.0");
    let messages = &doc["components"]["messages"];
    doc["channels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, channel)| {
            let address = channel["address"].as_str().unwrap_or_else(|| panic!("channel {id} has no address"));
            let channel_messages = channel["messages"].as_object().unwrap();
            assert_eq!(channel_messages.len(), 1, "channel {id}: one message type per channel");
            let reference = channel_messages.values().next().unwrap()["$ref"].as_str().unwrap();
            let name = reference.strip_prefix("#/components/messages/").unwrap();
            let schema_ref = messages[name]["payload"]["schema"]["$ref"].as_str().unwrap();
            let schema_file =
                schema_ref.strip_prefix("./json/").unwrap_or_else(|| panic!("{schema_ref} outside json/"));
            (address.to_owned(), schema_file.to_owned())
        })
        .collect()
}

#[test]
fn the_asyncapi_document_lists_exactly_the_registered_subjects() {
    let documented = asyncapi_channels();
    let mut in_code = BTreeMap::new();
    for event in registry::events() {
        in_code.insert(event.channel(), event.schema_file.to_owned());
    }
    for command in registry::commands() {
        in_code.insert(command.channel(), command.schema_file.to_owned());
    }
    let missing: Vec<_> = in_code.iter().filter(|(k, v)| documented.get(*k) != Some(v)).collect();
    let extra: Vec<_> = documented.iter().filter(|(k, v)| in_code.get(*k) != Some(v)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "asyncapi.json lacks {missing:?} and has unknown {extra:?}");
}
