//! Shared support for Tollgate's integration tests.

/// Absolute paths of the plugins and WAT fixtures that `build.rs` built, e.g.
/// [`plugins::HELLO`], plus `foreach_plugin!` (exported at the crate root) to require one
/// test per plugin.
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}

pub mod erp;
pub mod mcp_http;
pub mod otlp;
pub mod pg_server;
pub mod server;
pub mod web;

/// A valid input for the `invoice` tool: three widgets and shipping, total matching the lines.
pub fn invoice(id: &str) -> String {
    invoice_with(id, 3)
}

/// A valid invoice for `quantity` widgets: a different quantity is a different payload.
pub fn invoice_with(id: &str, quantity: u64) -> String {
    serde_json::json!({
        "invoice_id": id,
        "customer": "ACME GmbH",
        "currency": "EUR",
        "lines": [
            { "description": "Widgets", "quantity": quantity, "unit_price_cents": 1250 },
            { "description": "Shipping", "quantity": 1, "unit_price_cents": 900 }
        ],
        "total_cents": quantity * 1250 + 900
    })
    .to_string()
}
