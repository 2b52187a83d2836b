//! Property tests of request validation and DDL planning on arbitrary inputs: no input
//! panics, whatever is accepted stays within the documented bounds, and any sequence of
//! DDLs keeps the meta table consistent. Case counts are bounded so this runs in seconds.

mod common;

use std::collections::HashSet;

use collection_operator::meta::error::code;
use collection_operator::meta::names::DEFAULT_PARTITION;
use collection_operator::meta::schema::{
    MAX_DIMENSION, MAX_FIELDS, MAX_SHARDS, MAX_TYPE_PARAMS, check_request_name,
    prepare_create_collection, prepare_schema,
};
use collection_operator::meta::{Ddl, LATEST, MetaTable, PlanContext};
use collection_operator::proto::common::KeyValuePair;
use collection_operator::proto::schema::{CollectionSchema, DataType, FieldSchema};
use proptest::prelude::*;
use prost::Message;

/// What every accepted schema satisfies.
fn assert_bounded(schema: &CollectionSchema) {
    assert!(!schema.fields.is_empty() && schema.fields.len() <= MAX_FIELDS);
    for (index, field) in schema.fields.iter().enumerate() {
        assert_eq!(field.field_id, 100 + index as i64);
        assert!(field.type_params.len() <= MAX_TYPE_PARAMS);
        let keys: HashSet<&str> = field.type_params.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys.len(), field.type_params.len(), "one value per key");
        if field.data_type == DataType::FloatVector as i32 {
            let dim = field
                .type_params
                .iter()
                .find(|p| p.key == "dim")
                .map(|p| {
                    p.value
                        .parse::<i64>()
                        .expect("an accepted dim is an integer")
                })
                .expect("a vector has a dim");
            assert!((2..=MAX_DIMENSION).contains(&dim), "dim {dim}");
        }
    }
    assert_eq!(schema.fields.iter().filter(|f| f.is_primary_key).count(), 1);
}

fn name_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("c".to_string()),
        Just("id".to_string()),
        Just("v".to_string()),
        "[a-z_][a-z0-9_]{0,6}",
        "[ -~]{0,8}",
        Just("x".repeat(256)),
    ]
}

fn param_strategy() -> impl Strategy<Value = KeyValuePair> {
    let key = prop_oneof![
        Just("dim"),
        Just("max_length"),
        Just("max_capacity"),
        Just("other")
    ];
    let value = prop_oneof![
        Just("8".to_string()),
        Just(" 8 ".to_string()),
        Just("+8".to_string()),
        Just("-1".to_string()),
        Just("99999999999999999999".to_string()),
        Just("32769".to_string()),
        "[0-9]{1,5}",
        "[ -~]{0,6}",
    ];
    (key, value).prop_map(|(key, value)| KeyValuePair {
        key: key.into(),
        value,
    })
}

fn field_strategy() -> impl Strategy<Value = FieldSchema> {
    let data_type = prop_oneof![
        Just(DataType::Int64 as i32),
        Just(DataType::VarChar as i32),
        Just(DataType::FloatVector as i32),
        Just(DataType::BinaryVector as i32),
        Just(DataType::Array as i32),
        Just(DataType::Bool as i32),
        -3..300i32,
    ];
    (
        name_strategy(),
        data_type,
        prop::collection::vec(param_strategy(), 0..4),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(DataType::Int64 as i32), -1..30i32],
    )
        .prop_map(
            |(name, data_type, type_params, pk, auto_id, element_type)| FieldSchema {
                name,
                data_type,
                type_params,
                is_primary_key: pk,
                auto_id,
                element_type,
                ..Default::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bytes as a schema, any shard count: an answer, never a panic.
    #[test]
    fn arbitrary_schema_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        shards in any::<i32>(),
    ) {
        if let Ok(schema) = prepare_create_collection(&bytes, shards) {
            prop_assert!(shards <= MAX_SHARDS);
            assert_bounded(&schema);
        }
    }

    /// Structured but arbitrary schemas: whatever is accepted is within the bounds, and a
    /// refusal carries a Milvus code.
    #[test]
    fn accepted_schemas_are_bounded(
        name in name_strategy(),
        request_name in name_strategy(),
        fields in prop::collection::vec(field_strategy(), 0..6),
        shards in -2..20i32,
    ) {
        let bytes = CollectionSchema { name, fields, ..Default::default() }.encode_to_vec();
        match prepare_create_collection(&bytes, shards) {
            Ok(schema) => {
                prop_assert!(shards <= MAX_SHARDS);
                assert_bounded(&schema);
                let full = prepare_schema(&request_name, &bytes);
                prop_assert_eq!(full.is_ok(), check_request_name(&request_name, &schema).is_ok());
            }
            Err(error) => {
                prop_assert!([code::PARAMETER_INVALID, code::UNEXPECTED, 1700].contains(&error.code),
                    "unexpected code {}", error.code);
                prop_assert!(prepare_schema(&request_name, &bytes).is_err());
            }
        }
    }
}

// ---- DDL planning over random sequences ----

const DBS: [&str; 3] = ["default", "d1", "d2"];
const NAMES: [&str; 4] = ["c0", "c1", "a0", "a1"];
const PARTITIONS: [&str; 5] = ["p0", "_default", "1p", "p$", ""];

#[derive(Debug, Clone)]
enum Op {
    CreateDatabase(usize),
    DropDatabase(usize),
    CreateCollection(usize, usize, i32, i32),
    DropCollection(usize, usize),
    CreatePartition(usize, usize, usize),
    DropPartition(usize, usize, usize),
    CreateAlias(usize, usize, usize),
    AlterAlias(usize, usize, usize),
    DropAlias(usize, usize),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let db = 0..DBS.len();
    let name = 0..NAMES.len();
    let part = 0..PARTITIONS.len();
    prop_oneof![
        db.clone().prop_map(Op::CreateDatabase),
        db.clone().prop_map(Op::DropDatabase),
        (db.clone(), name.clone(), 0..3i32, 0..3i32)
            .prop_map(|(d, n, s, c)| Op::CreateCollection(d, n, s, c)),
        (db.clone(), name.clone()).prop_map(|(d, n)| Op::DropCollection(d, n)),
        (db.clone(), name.clone(), part.clone()).prop_map(|(d, n, p)| Op::CreatePartition(d, n, p)),
        (db.clone(), name.clone(), part).prop_map(|(d, n, p)| Op::DropPartition(d, n, p)),
        (db.clone(), name.clone(), name.clone()).prop_map(|(d, c, a)| Op::CreateAlias(d, c, a)),
        (db.clone(), name.clone(), name.clone()).prop_map(|(d, c, a)| Op::AlterAlias(d, c, a)),
        (db, name).prop_map(|(d, a)| Op::DropAlias(d, a)),
    ]
}

fn schema_of(name: &str) -> CollectionSchema {
    prepare_schema(name, &common::schema_with_dim(name, 4)).expect("valid schema")
}

fn ddl_of(op: &Op) -> Ddl {
    let s = |i: usize| NAMES[i].to_string();
    let d = |i: usize| DBS[i].to_string();
    match *op {
        Op::CreateDatabase(db) => Ddl::CreateDatabase {
            name: d(db),
            properties: Vec::new(),
        },
        Op::DropDatabase(db) => Ddl::DropDatabase { name: d(db) },
        Op::CreateCollection(db, n, shards, level) => Ddl::CreateCollection {
            db: d(db),
            schema: schema_of(NAMES[n]),
            shards_num: shards,
            consistency_level: level,
            properties: Vec::new(),
        },
        Op::DropCollection(db, n) => Ddl::DropCollection {
            db: d(db),
            name: s(n),
        },
        Op::CreatePartition(db, n, p) => Ddl::CreatePartition {
            db: d(db),
            collection: s(n),
            partition: PARTITIONS[p].into(),
        },
        Op::DropPartition(db, n, p) => Ddl::DropPartition {
            db: d(db),
            collection: s(n),
            partition: PARTITIONS[p].into(),
        },
        Op::CreateAlias(db, c, a) => Ddl::CreateAlias {
            db: d(db),
            collection: s(c),
            alias: s(a),
        },
        Op::AlterAlias(db, c, a) => Ddl::AlterAlias {
            db: d(db),
            collection: s(c),
            alias: s(a),
        },
        Op::DropAlias(db, a) => Ddl::DropAlias {
            db: d(db),
            alias: s(a),
        },
    }
}

/// What must hold of the meta table after every step.
fn assert_consistent(table: &MetaTable) {
    for db in table.databases(LATEST) {
        let collections = table.collections_in(db.id, LATEST);
        let names: HashSet<&str> = collections.iter().map(|c| c.name.as_str()).collect();
        for (alias, target) in table.aliases_in(db.id, LATEST) {
            assert!(
                !names.contains(alias.as_str()),
                "alias {alias} is also a collection"
            );
            let collection = table
                .collection_by_id(target, LATEST)
                .expect("an alias points at a live collection");
            assert_eq!(collection.db_id, db.id, "alias {alias} crosses databases");
        }
        for collection in collections {
            let partitions: Vec<&str> = collection
                .partitions
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            let unique: HashSet<&&str> = partitions.iter().collect();
            assert_eq!(unique.len(), partitions.len(), "duplicate partitions");
            assert!(partitions.contains(&DEFAULT_PARTITION), "{partitions:?}");
            assert!(
                partitions.iter().all(|p| !p.is_empty() && !p.contains('$')),
                "{partitions:?}"
            );
            assert!((1..=MAX_SHARDS).contains(&collection.shards_num));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any DDL sequence: planning answers without panicking, applied changes keep the table
    /// consistent, and repeating a DDL that just succeeded changes nothing (Milvus's
    /// idempotent creates and drops) — except CreateDatabase, which Milvus refuses twice.
    #[test]
    fn ddl_sequences_keep_the_table_consistent(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let mut table = MetaTable::default();
        let mut next_id = 100i64;
        let mut ts = 1u64 << 18;
        let mut apply = |table: &mut MetaTable, ddl: &Ddl, ts: &mut u64| {
            *ts += 1 << 18;
            let mut ctx = PlanContext { ts: *ts, next_id: &mut next_id };
            let planned = table.plan(ddl, &mut ctx);
            if let Ok(changes) = &planned {
                let mut touched = Vec::new();
                for change in changes {
                    table.apply(change, *ts, &mut touched);
                }
            }
            planned.map(|changes| changes.len())
        };
        let default_db = Ddl::CreateDatabase {
            name: "default".into(),
            properties: Vec::new(),
        };
        let created = apply(&mut table, &default_db, &mut ts);
        prop_assert!(created.is_ok());
        for op in &ops {
            let ddl = ddl_of(op);
            let first = apply(&mut table, &ddl, &mut ts);
            assert_consistent(&table);
            if first.is_ok() && !matches!(op, Op::CreateDatabase(_)) {
                let again = apply(&mut table, &ddl, &mut ts);
                prop_assert_eq!(again, Ok(0), "{:?} repeated", op);
            }
        }
    }
}
