//! A property test of the DCM ledger: a simulated unit is driven through
//! random sequences of payments, bad-payments, zero-commands (answered with
//! final balances), acknowledgements, force-resets, duplicates and credit
//! use, through the service functions the API and the gateway call, on
//! SQLite. A reference model predicts every accept/reject; after each step
//! the stored ledger must agree with it, the balance must never go below 0,
//! and every closed cycle must reconcile.

mod common;

use chrono::{Duration, NaiveDateTime};
use common::{Backend, TestServer};
use control_plane::catalogue::Catalogue;
use control_plane::db::Db;
use control_plane::dcm::{self, Category, DcmError, NewCommand};
use control_plane::query::Visibility;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sea_query::{Alias, Expr, Query};
use serde_json::json;

#[derive(Debug, Clone)]
enum Op {
    /// A client adds a command (possibly with a value the rules refuse).
    Add(Category, i64),
    /// A client re-sends the transaction id of an earlier command.
    Duplicate(usize),
    /// The gateway delivers up to this many pending commands; the unit
    /// applies them in order and confirms each.
    Deliver(usize),
    /// The unit uses this much credit.
    Consume(i64),
    /// A client force-resets the unit.
    ForceReset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1i64..1000).prop_map(|v| Op::Add(Category::Payment, v)),
        3 => (-1200i64..0).prop_map(|v| Op::Add(Category::BadPayment, v)),
        1 => Just(Op::Add(Category::ZeroCommand, 0)),
        1 => (-5i64..5).prop_map(|v| Op::Add(Category::Payment, v)),
        1 => (-5i64..5).prop_map(|v| Op::Add(Category::BadPayment, v)),
        1 => (-5i64..5).prop_map(|v| Op::Add(Category::ZeroCommand, v)),
        1 => any::<usize>().prop_map(Op::Duplicate),
        3 => (1usize..4).prop_map(Op::Deliver),
        2 => (0i64..600).prop_map(Op::Consume),
        1 => Just(Op::ForceReset),
    ]
}

/// What the model knows of one command.
#[derive(Debug, Clone)]
struct Cmd {
    id: i64,
    category: Category,
    value: i64,
    void: bool,
    acked: bool,
}

#[derive(Debug, Default)]
struct Model {
    commands: Vec<Cmd>,
    transaction_ids: Vec<String>,
    /// The unit's own balance.
    unit_balance: i64,
    /// The last balance the unit reported.
    reported: Option<i64>,
    published: usize,
}

impl Model {
    fn live(&self) -> impl Iterator<Item = &Cmd> {
        self.commands.iter().filter(|c| !c.void)
    }
    fn added(&self) -> i64 {
        self.live()
            .filter(|c| c.category == Category::Payment)
            .map(|c| c.value)
            .sum()
    }
    fn removed(&self) -> i64 {
        self.live()
            .filter(|c| c.category == Category::BadPayment)
            .map(|c| -c.value)
            .sum()
    }
    fn pending_zero(&self) -> bool {
        self.live()
            .any(|c| c.category == Category::ZeroCommand && !c.acked)
    }
    fn accepts(&self, category: Category, value: i64) -> bool {
        let sign_ok = match category {
            Category::Payment => value > 0,
            Category::BadPayment => value < 0,
            Category::ZeroCommand => value == 0,
            Category::ForceReset => false,
        };
        sign_ok
            && !self.pending_zero()
            && (category != Category::BadPayment || self.removed() - value <= self.added())
    }
}

fn check(cond: bool, what: impl Into<String>) -> Result<(), TestCaseError> {
    if cond {
        Ok(())
    } else {
        Err(TestCaseError::fail(what.into()))
    }
}

async fn count(db: &Db, table: &str, imei: &str) -> i64 {
    db.fetch_i64(
        &Query::select()
            .expr(Expr::cust("COUNT(*)"))
            .from(Alias::new(table))
            .and_where(Expr::col(Alias::new("product_imei")).eq(imei))
            .to_owned(),
    )
    .await
    .unwrap()
}

async fn run_case(db: &Db, cat: &Catalogue, imei: &str, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut m = Model::default();
    let start: NaiveDateTime = control_plane::values::now();
    for (step, op) in ops.into_iter().enumerate() {
        let at = start + Duration::seconds(step as i64);
        let mut tx = db.begin().await.unwrap();
        match op {
            Op::Add(category, value) => {
                let transaction_id = format!("{imei}-{step}");
                let expected = m.accepts(category, value);
                let result = dcm::add_payment_command(
                    &mut tx,
                    cat,
                    imei,
                    &NewCommand {
                        category,
                        value,
                        transaction_id: transaction_id.clone(),
                    },
                    "client",
                    &Visibility::Global,
                    at,
                )
                .await;
                check(
                    result.is_ok() == expected,
                    format!("step {step}: {category:?} {value}: expected accept={expected}, got {result:?}; model {m:?}"),
                )?;
                if let Ok(c) = result {
                    m.commands.push(Cmd {
                        id: c.payment_command_id,
                        category,
                        value,
                        void: false,
                        acked: false,
                    });
                    m.transaction_ids.push(transaction_id);
                }
            }
            Op::Duplicate(i) => {
                if m.transaction_ids.is_empty() {
                    continue;
                }
                let transaction_id = m.transaction_ids[i % m.transaction_ids.len()].clone();
                let result = dcm::add_payment_command(
                    &mut tx,
                    cat,
                    imei,
                    &NewCommand {
                        category: Category::Payment,
                        value: 1,
                        transaction_id,
                    },
                    "client",
                    &Visibility::Global,
                    at,
                )
                .await;
                check(
                    matches!(
                        result,
                        Err(DcmError::DuplicateTransaction(_))
                            | Err(DcmError::ZeroCommandPending { .. })
                    ),
                    format!("step {step}: duplicate accepted: {result:?}"),
                )?;
            }
            Op::Deliver(n) => {
                let pending = dcm::pending_commands(&mut tx, imei).await.unwrap();
                let expected: Vec<i64> = m.live().filter(|c| !c.acked).map(|c| c.id).collect();
                let got: Vec<i64> = pending.iter().map(|c| c.payment_command_id).collect();
                check(
                    got == expected,
                    format!("step {step}: pending {got:?} != {expected:?}"),
                )?;
                for c in pending.into_iter().take(n) {
                    let id = c.payment_command_id;
                    match c.category {
                        Category::Payment | Category::BadPayment => {
                            m.unit_balance = (m.unit_balance + c.value).max(0);
                            dcm::acknowledge(
                                &mut tx,
                                cat,
                                imei,
                                id,
                                Some(m.unit_balance),
                                "gw",
                                at,
                            )
                            .await
                            .unwrap();
                            m.reported = Some(m.unit_balance);
                        }
                        Category::ForceReset => {
                            m.unit_balance = 0;
                            dcm::acknowledge(&mut tx, cat, imei, id, Some(0), "gw", at)
                                .await
                                .unwrap();
                            m.reported = Some(0);
                        }
                        Category::ZeroCommand => {
                            let final_balance = m.unit_balance;
                            m.unit_balance = 0;
                            let cycle_net: i64 = m
                                .live()
                                .filter(|x| x.id < id)
                                .filter(|x| {
                                    matches!(x.category, Category::Payment | Category::BadPayment)
                                })
                                .map(|x| x.value)
                                .sum();
                            let cycle_added: i64 = m
                                .live()
                                .filter(|x| x.id < id && x.category == Category::Payment)
                                .map(|x| x.value)
                                .sum();
                            let out = dcm::record_final_balance(
                                &mut tx,
                                cat,
                                imei,
                                id,
                                final_balance,
                                "gw",
                                at,
                            )
                            .await
                            .unwrap();
                            check(
                                out.created && out.notification_id.is_some(),
                                "final balance published",
                            )?;
                            check(
                                out.final_balance.total_added == cycle_net,
                                format!(
                                    "total_added {} != {cycle_net}",
                                    out.final_balance.total_added
                                ),
                            )?;
                            // Reconciliation: the unit can never return more than was added.
                            check(
                                final_balance <= cycle_added,
                                format!("final balance {final_balance} > added {cycle_added}"),
                            )?;
                            // A retried report is a no-op.
                            let again = dcm::record_final_balance(
                                &mut tx,
                                cat,
                                imei,
                                id,
                                final_balance + 1,
                                "gw",
                                at,
                            )
                            .await
                            .unwrap();
                            check(
                                !again.created && again.notification_id.is_none(),
                                "retry is a no-op",
                            )?;
                            m.published += 1;
                            m.reported = Some(0);
                            for x in m.commands.iter_mut().filter(|x| x.id < id) {
                                x.void = true;
                            }
                        }
                    }
                    if let Some(x) = m.commands.iter_mut().find(|x| x.id == id) {
                        x.acked = true;
                    }
                }
            }
            Op::Consume(secs) => {
                m.unit_balance = (m.unit_balance - secs).max(0);
            }
            Op::ForceReset => {
                let transaction_id = format!("{imei}-{step}");
                let expected_outstanding: i64 = m
                    .live()
                    .filter(|c| {
                        !c.acked && matches!(c.category, Category::Payment | Category::BadPayment)
                    })
                    .map(|c| c.value)
                    .sum();
                let reset = dcm::force_reset(
                    &mut tx,
                    cat,
                    imei,
                    &transaction_id,
                    "client",
                    &Visibility::Global,
                    at,
                )
                .await
                .unwrap();
                check(
                    reset.outstanding_payments == expected_outstanding,
                    format!(
                        "outstanding {} != {expected_outstanding}",
                        reset.outstanding_payments
                    ),
                )?;
                check(
                    reset.last_known_balance == m.reported,
                    format!(
                        "last known {:?} != {:?}",
                        reset.last_known_balance, m.reported
                    ),
                )?;
                for c in &mut m.commands {
                    c.void = true;
                }
                m.commands.push(Cmd {
                    id: reset.command.payment_command_id,
                    category: Category::ForceReset,
                    value: 0,
                    void: false,
                    acked: false,
                });
                m.transaction_ids.push(transaction_id);
                m.reported = Some(0);
            }
        }
        // Invariants, read inside the same transaction.
        let ledger = dcm::ledger(&mut tx, imei).await.unwrap();
        check(
            ledger.removed <= ledger.added,
            format!("step {step}: removed > added: {ledger:?}"),
        )?;
        check(
            ledger.added == m.added() && ledger.removed == m.removed(),
            format!(
                "step {step}: ledger {ledger:?} != model added {} removed {}",
                m.added(),
                m.removed()
            ),
        )?;
        check(
            ledger.pending_zero_command.is_some() == m.pending_zero(),
            format!("step {step}: pending zero-command disagrees"),
        )?;
        if let Some(b) = dcm::balance(&mut tx, imei).await.unwrap() {
            check(
                b.balance >= 0,
                format!("step {step}: negative balance {b:?}"),
            )?;
            check(
                Some(b.balance) == m.reported,
                format!("step {step}: balance {b:?} != {:?}", m.reported),
            )?;
        }
        tx.commit().await.unwrap();
        check(m.unit_balance >= 0, "unit balance below 0")?;
    }
    // Every command is stored once; every published final balance is one notification.
    let stored = count(db, "payment_command", imei).await;
    check(
        stored == m.commands.len() as i64,
        format!("{stored} commands stored, model has {}", m.commands.len()),
    )?;
    let notifications = count(db, "notification", imei).await;
    check(
        notifications == m.published as i64,
        format!("{notifications} notifications, {} published", m.published),
    )?;
    Ok(())
}

#[test]
fn random_command_sequences_keep_the_ledger_sound() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(TestServer::start(Backend::Sqlite));
    let cases = std::env::var("DCM_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..40), |ops| {
            rt.block_on(async {
                let imei = server
                    .seed("product", json!({"dcm_enabled_flag": true}))
                    .await;
                run_case(
                    &server.state.db,
                    &server.state.catalogue,
                    imei.as_str().unwrap(),
                    ops,
                )
                .await
            })
        })
        .unwrap();
}
