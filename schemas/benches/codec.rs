//! How fast an event envelope is encoded and decoded: every message on every
//! hop pays this. Prints `bench: <name> = <value> <unit>` lines for `just bench`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a bench program: output is its purpose

use std::hint::black_box;
use std::time::{Duration, Instant};

use emporium_schemas::events::order::OrderPlaced;
use emporium_schemas::{Envelope, RawEnvelope};

const EXAMPLE: &str = include_str!("../examples/order.placed.v1/valid/typical.json");

/// Runs `work` repeatedly for about a second and returns operations per second.
fn per_second(mut work: impl FnMut()) -> f64 {
    for _ in 0..1_000 {
        work();
    }
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..1_000 {
            work();
        }
        done += 1_000;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let bytes = EXAMPLE.as_bytes();
    let typed = Envelope::<OrderPlaced>::from_json(bytes).unwrap();

    let decode = per_second(|| {
        black_box(Envelope::<OrderPlaced>::from_json(black_box(bytes)).unwrap());
    });
    let header = per_second(|| {
        let raw = RawEnvelope::from_json(black_box(bytes)).unwrap();
        black_box((raw.type_name().len(), raw.seq()));
    });
    let encode = per_second(|| {
        black_box(black_box(&typed).to_json().unwrap());
    });
    println!("bench: order.placed decode (typed) = {decode:.0} msg/s");
    println!("bench: order.placed header decode (raw) = {header:.0} msg/s");
    println!("bench: order.placed encode = {encode:.0} msg/s");
    println!("bench: order.placed size = {} bytes", typed.to_json().unwrap().len());
}
