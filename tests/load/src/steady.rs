//! A steady load of checkouts that rides out outages, as the chaos runs put
//! on the stack: a handful of customers, each checking out one product at a
//! fixed pace with the same `Idempotency-Key` on every try until the gateway
//! accepts it, so every order placed is known by id. One checkout in ten pays
//! with a card the provider declines; one in ten also cancels the customer's
//! previous order (then most often confirmed: a refund).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::shop::{Account, Shop};

/// How long one request may go on meeting outages before the run calls it lost.
const PATIENCE: Duration = Duration::from_secs(120);

/// What the load saw, over all its customers.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// The orders the gateway accepted (202), by id.
    pub accepted: Vec<String>,
    /// The orders their customers cancelled.
    pub cancelled: Vec<String>,
    /// Requests answered other than a client riding out outages expects, or not at all.
    pub failures: Vec<String>,
    /// Tries that met a connection error, a 5xx or a 429 and were made again.
    pub retries: u64,
    /// From the start to the last checkout's answer.
    pub elapsed: Duration,
}

/// The load, running until [`SteadyLoad::stop`].
#[derive(Debug)]
pub struct SteadyLoad {
    stopping: watch::Sender<bool>,
    customers: Vec<JoinHandle<LoadReport>>,
    accepted: Arc<AtomicUsize>,
    started: Instant,
}

impl SteadyLoad {
    /// `customers` share `rate` checkouts per second of `shop`'s products between them.
    pub fn start(shop: &Shop, customers: Vec<Account>, rate: f64) -> Self {
        let (stopping, stop) = watch::channel(false);
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = customers.len().max(1);
        let period = Duration::from_secs_f64(count as f64 / rate);
        let customers = customers
            .into_iter()
            .enumerate()
            .map(|(n, account)| {
                let customer = Customer { shop: shop.clone(), account, accepted: accepted.clone(), first: n };
                // Spread over the period, so the load comes evenly rather than in bursts.
                let offset = period.mul_f64(n as f64 / count as f64);
                tokio::spawn(customer.shop_until(stop.clone(), period, offset, count))
            })
            .collect();
        Self { stopping, customers, accepted, started: Instant::now() }
    }

    /// Checkouts accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Starts no more checkouts, lets those under way end, and reports.
    pub async fn stop(self) -> anyhow::Result<LoadReport> {
        self.stopping.send_replace(true);
        let mut total = LoadReport::default();
        for customer in self.customers {
            let report = customer.await?;
            total.accepted.extend(report.accepted);
            total.cancelled.extend(report.cancelled);
            total.failures.extend(report.failures);
            total.retries += report.retries;
        }
        total.elapsed = self.started.elapsed();
        Ok(total)
    }
}

struct Customer {
    shop: Shop,
    account: Account,
    accepted: Arc<AtomicUsize>,
    /// This customer's first checkout's number; later ones step by the number of customers.
    first: usize,
}

impl Customer {
    async fn shop_until(
        self,
        mut stop: watch::Receiver<bool>,
        period: Duration,
        offset: Duration,
        step: usize,
    ) -> LoadReport {
        let mut report = LoadReport::default();
        let mut ticks = tokio::time::interval_at(Instant::now() + offset, period);
        // After an outage, go on at the pace rather than catch up in a burst.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut number = self.first;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|stopping| *stopping) => break,
            }
            if let Err(failure) = self.check_out(number, &mut report).await {
                report.failures.push(format!("{failure:#}"));
            }
            number += step;
        }
        report
    }

    /// Checkout `number`: one product into the cart, then the checkout.
    async fn check_out(&self, number: usize, report: &mut LoadReport) -> anyhow::Result<()> {
        let product = self.shop.products[number % self.shop.products.len()].as_str();
        let method = if number % 10 == 9 { "tok_declined" } else { "tok_visa" };
        let checkout = self.shop.checkout_through_outages(&self.account, &[product], method, PATIENCE).await?;
        report.retries += u64::from(checkout.retries);
        self.accepted.fetch_add(1, Ordering::Relaxed);

        if number % 10 == 4
            && let Some(previous) = report.accepted.last().cloned()
        {
            let path = format!("/api/v1/orders/{previous}/cancel");
            let cancelled = self
                .shop
                .send_through_outages(&self.account, reqwest::Method::POST, &path, &json!({}), None, PATIENCE)
                .await?;
            report.retries += u64::from(cancelled.retries);
            anyhow::ensure!(cancelled.status == 200, "cancelling: {} {}", cancelled.status, cancelled.body);
            report.cancelled.push(previous);
        }
        report.accepted.push(checkout.order);
        Ok(())
    }
}
