//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds the
//! files it finds, and Cargo would not otherwise notice a new one.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
