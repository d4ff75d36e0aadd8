//! Filter compilation: the per-request cost of the query language before
//! the database sees anything. A realistic product list query (three
//! filters including an `or`, a relation filter, `order_by`) for an ENTITY
//! user, so scope subqueries are built too.

use std::hint::black_box;

use control_plane::catalogue::Catalogue;
use control_plane::query;
use criterion::{criterion_group, criterion_main, Criterion};

use sea_query::PostgresQueryBuilder;
use smartsolar_bench::{PRODUCT_QUERY, PRODUCT_QUERY_PAGE, PRODUCT_QUERY_VIEWER};

fn filters(c: &mut Criterion) {
    let cat = Catalogue::builtin();
    let product = cat.table("product").expect("product table");
    let visibility = PRODUCT_QUERY_VIEWER;
    let page = PRODUCT_QUERY_PAGE;

    c.bench_function("query/parse", |b| {
        b.iter(|| query::parse(black_box(PRODUCT_QUERY)).unwrap())
    });

    let spec = query::parse(PRODUCT_QUERY).unwrap();
    c.bench_function("query/compile", |b| {
        b.iter(|| query::compile(&cat, product, black_box(&spec), &visibility, page).unwrap())
    });

    // What a list request pays in total: parse, compile, and render both
    // statements to PostgreSQL SQL with their parameters.
    c.bench_function("query/parse_compile_render_pg", |b| {
        b.iter(|| {
            let spec = query::parse(black_box(PRODUCT_QUERY)).unwrap();
            let compiled = query::compile(&cat, product, &spec, &visibility, page).unwrap();
            (
                compiled.rows.build(PostgresQueryBuilder),
                compiled.count.build(PostgresQueryBuilder),
            )
        })
    });
}

criterion_group!(benches, filters);
criterion_main!(benches);
