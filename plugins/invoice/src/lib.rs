//! `invoice`: validates an invoice, then posts it to the ERP through the `erp.post-invoice`
//! effect, exactly once per invoice ID however often the run is retried or resumed.
//!
//! The idempotency key is `post-invoice:<invoice_id>` and the payload is the invoice as
//! received, serialized in the struct's field order, so every attempt sends the same bytes.

use serde_json::{Value, json};
use tollgate_sdk::prelude::*;

const POST_INVOICE: &str = "erp.post-invoice";

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Invoice {
    #[schemars(regex(pattern = r"^INV-[A-Za-z0-9-]{1,40}$"))]
    invoice_id: String,
    #[schemars(length(min = 1, max = 200))]
    customer: String,
    /// ISO 4217 code, e.g. `EUR`.
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    currency: String,
    #[schemars(length(min = 1, max = 100))]
    lines: Vec<Line>,
    /// Must equal the sum of `quantity * unit_price_cents` over the lines.
    total_cents: u64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Line {
    description: String,
    #[schemars(range(min = 1))]
    quantity: u32,
    unit_price_cents: u64,
}

#[derive(Serialize, Deserialize)]
struct Validated {
    invoice_id: String,
    total_cents: u64,
}

#[derive(Serialize)]
struct Posted<'a> {
    invoice_id: &'a str,
    erp: &'a Value,
}

#[derive(Serialize)]
struct Output {
    invoice_id: String,
    posted: bool,
    replayed: bool,
    erp: Value,
    run_id: String,
    attempt: u32,
}

/// The sum of the lines, or `None` when it overflows `u64`.
fn lines_total(lines: &[Line]) -> Option<u64> {
    lines.iter().try_fold(0u64, |total, line| {
        total.checked_add(u64::from(line.quantity).checked_mul(line.unit_price_cents)?)
    })
}

/// Checks the schema cannot express.
fn validate(invoice: &Invoice) -> Result<(), Error> {
    let expected = lines_total(&invoice.lines).ok_or_else(|| {
        Error::validation("lines: total overflows 64-bit cents")
            .with_details(json!({"got": invoice.total_cents}))
    })?;
    if expected != invoice.total_cents {
        return Err(Error::validation(format!(
            "total_cents is {} but the lines add up to {expected}",
            invoice.total_cents
        ))
        .with_details(json!({"expected": expected, "got": invoice.total_cents})));
    }
    Ok(())
}

struct PostInvoice;

impl Tool for PostInvoice {
    const NAME: &'static str = "invoice";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Validates an invoice and posts it to the ERP exactly once per invoice ID.";
    const EFFECTS: &'static [&'static str] = &[POST_INVOICE];
    type Input = Invoice;
    type Output = Output;

    fn run(ctx: &Context, invoice: Invoice) -> Result<Output, Error> {
        validate(&invoice)?;

        if checkpoint::load::<Validated>("validated")?.is_none() {
            checkpoint::save(
                "validated",
                &Validated {
                    invoice_id: invoice.invoice_id.clone(),
                    total_cents: invoice.total_cents,
                },
            )?;
            log::info_with(
                "validated",
                &[
                    ("invoice_id", &invoice.invoice_id),
                    ("total_cents", &invoice.total_cents),
                ],
            );
        }

        let key = format!("post-invoice:{}", invoice.invoice_id);
        let outcome = effects::perform(POST_INVOICE, &key, &invoice)?;
        let erp = outcome.body_value();

        checkpoint::save(
            "posted",
            &Posted {
                invoice_id: &invoice.invoice_id,
                erp: &erp,
            },
        )?;

        Ok(Output {
            invoice_id: invoice.invoice_id,
            posted: true,
            replayed: outcome.replayed,
            erp,
            run_id: ctx.run_id().to_owned(),
            attempt: ctx.attempt(),
        })
    }
}

tollgate_sdk::export_tool!(PostInvoice);
