//! The alias behaviour matrix of milvus-compat.md §2.2 (rows 1–24, "current source" column:
//! Milvus 2.5.5+/2.6), DescribeCollection via alias (§2.4) and database scoping (§2.5), over
//! real gRPC on loopback. Every error asserts `code`, the legacy `error_code`, `reason` and
//! `detail` (§1.5), and every case checks the state it leaves behind.

mod common;

use collection_operator::proto::api::*;
use collection_operator::proto::common::{ErrorCode, Status};
use common::{
    Client, InProcess, assert_error_msg, assert_ok, create_alias_in, create_collection_in,
    create_database, valid_schema, with_header,
};

use ErrorCode::{CollectionNotExists, IllegalArgument, UnexpectedError};

// ---- small RPC wrappers (database in the request field; "" = default) ----

async fn create_collection(client: &mut Client, name: &str) -> Status {
    client
        .create_collection(CreateCollectionRequest {
            collection_name: name.into(),
            schema: valid_schema(name),
            ..Default::default()
        })
        .await
        .expect("CreateCollection rpc")
        .into_inner()
}

async fn drop_collection(client: &mut Client, db: &str, name: &str) -> Status {
    client
        .drop_collection(DropCollectionRequest {
            db_name: db.into(),
            collection_name: name.into(),
            ..Default::default()
        })
        .await
        .expect("DropCollection rpc")
        .into_inner()
}

async fn has_collection(client: &mut Client, db: &str, name: &str) -> bool {
    let response = client
        .has_collection(HasCollectionRequest {
            db_name: db.into(),
            collection_name: name.into(),
            ..Default::default()
        })
        .await
        .expect("HasCollection rpc")
        .into_inner();
    assert_ok(response.status.as_ref().expect("status"), "HasCollection");
    response.value
}

async fn describe_collection(
    client: &mut Client,
    db: &str,
    name: &str,
) -> DescribeCollectionResponse {
    client
        .describe_collection(DescribeCollectionRequest {
            db_name: db.into(),
            collection_name: name.into(),
            ..Default::default()
        })
        .await
        .expect("DescribeCollection rpc")
        .into_inner()
}

async fn show_collections(client: &mut Client, db: &str) -> Vec<String> {
    let response = client
        .show_collections(ShowCollectionsRequest {
            db_name: db.into(),
            ..Default::default()
        })
        .await
        .expect("ShowCollections rpc")
        .into_inner();
    assert_ok(response.status.as_ref().expect("status"), "ShowCollections");
    response.collection_names
}

async fn create_alias(client: &mut Client, db: &str, alias: &str, collection: &str) -> Status {
    client
        .create_alias(CreateAliasRequest {
            db_name: db.into(),
            collection_name: collection.into(),
            alias: alias.into(),
            ..Default::default()
        })
        .await
        .expect("CreateAlias rpc")
        .into_inner()
}

async fn alter_alias(client: &mut Client, db: &str, alias: &str, collection: &str) -> Status {
    client
        .alter_alias(AlterAliasRequest {
            db_name: db.into(),
            collection_name: collection.into(),
            alias: alias.into(),
            ..Default::default()
        })
        .await
        .expect("AlterAlias rpc")
        .into_inner()
}

async fn drop_alias(client: &mut Client, db: &str, alias: &str) -> Status {
    client
        .drop_alias(DropAliasRequest {
            db_name: db.into(),
            alias: alias.into(),
            ..Default::default()
        })
        .await
        .expect("DropAlias rpc")
        .into_inner()
}

async fn describe_alias(client: &mut Client, db: &str, alias: &str) -> DescribeAliasResponse {
    client
        .describe_alias(DescribeAliasRequest {
            db_name: db.into(),
            alias: alias.into(),
            ..Default::default()
        })
        .await
        .expect("DescribeAlias rpc")
        .into_inner()
}

async fn list_aliases(client: &mut Client, db: &str, collection: &str) -> ListAliasesResponse {
    client
        .list_aliases(ListAliasesRequest {
            db_name: db.into(),
            collection_name: collection.into(),
            ..Default::default()
        })
        .await
        .expect("ListAliases rpc")
        .into_inner()
}

async fn show_partitions(client: &mut Client, db: &str, collection: &str) -> Vec<String> {
    let response = client
        .show_partitions(ShowPartitionsRequest {
            db_name: db.into(),
            collection_name: collection.into(),
            ..Default::default()
        })
        .await
        .expect("ShowPartitions rpc")
        .into_inner();
    assert_ok(response.status.as_ref().expect("status"), "ShowPartitions");
    response.partition_names
}

/// The target of `alias` in `db`, asserting DescribeAlias succeeds.
#[track_caller]
fn target_of(response: &DescribeAliasResponse) -> &str {
    assert_ok(response.status.as_ref().expect("status"), "DescribeAlias");
    &response.collection
}

/// Asserts DescribeAlias answered 1600 with empty response fields (row 16).
#[track_caller]
fn assert_alias_not_found(response: &DescribeAliasResponse, db: &str, alias: &str) {
    assert_error_msg(
        response.status.as_ref().expect("status"),
        1600,
        UnexpectedError,
        &format!("alias not found[database={db}][alias={alias}]"),
        "DescribeAlias of a missing alias",
    );
    assert_eq!(
        (
            response.db_name.as_str(),
            response.alias.as_str(),
            response.collection.as_str()
        ),
        ("", "", ""),
        "DescribeAlias error leaves the response fields empty"
    );
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// A listing's aliases, sorted (Milvus lists them in map order, §2.2 row 17).
#[track_caller]
fn aliases_listed(response: &ListAliasesResponse) -> Vec<String> {
    assert_ok(response.status.as_ref().expect("status"), "ListAliases");
    sorted(response.aliases.clone())
}

/// A server with collections `A` and `B` and alias `Z` → `A` in `default`.
struct Fixture {
    _server: InProcess,
    client: Client,
}

async fn fixture() -> Fixture {
    let server = InProcess::start().await;
    let mut client = server.client().await;
    create_collection_in(&mut client, "", "A").await;
    create_collection_in(&mut client, "", "B").await;
    create_alias_in(&mut client, "", "Z", "A").await;
    Fixture {
        _server: server,
        client,
    }
}

// ---- §2.2, one test per row ----

#[tokio::test]
async fn row01_create_same_alias_same_target_is_idempotent() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    for attempt in 0..2 {
        let status = create_alias(&mut client, "", "Z", "A").await;
        assert_ok(&status, &format!("repeated CreateAlias Z->A #{attempt}"));
    }
    assert_eq!(target_of(&describe_alias(&mut client, "", "Z").await), "A");
    assert_eq!(
        aliases_listed(&list_aliases(&mut client, "", "").await),
        ["Z"]
    );
}

#[tokio::test]
async fn row02_create_alias_to_another_target_is_1602() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    let status = create_alias(&mut client, "", "Z", "B").await;
    assert_error_msg(
        &status,
        1602,
        UnexpectedError,
        "Z is alias to another collection: A: alias already exist[database=default][alias=Z]",
        "CreateAlias Z->B while Z->A",
    );
    assert_eq!(target_of(&describe_alias(&mut client, "", "Z").await), "A");
    assert!(aliases_listed(&list_aliases(&mut client, "", "B").await).is_empty());
}

#[tokio::test]
async fn row03_alias_named_like_a_collection_is_1601() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    let status = create_alias(&mut client, "", "A", "B").await;
    assert_error_msg(
        &status,
        1601,
        UnexpectedError,
        "alias and collection name conflict[database=default][alias=A]",
        "CreateAlias A->B where A is a collection",
    );
    assert_alias_not_found(&describe_alias(&mut client, "", "A").await, "default", "A");
    assert_eq!(
        aliases_listed(&list_aliases(&mut client, "", "").await),
        ["Z"]
    );
    // The collection A itself is untouched.
    let described = describe_collection(&mut client, "", "A").await;
    assert_ok(described.status.as_ref().unwrap(), "DescribeCollection A");
    assert_eq!(described.schema.unwrap().name, "A");
    // A dropped collection no longer blocks its name as an alias (PR #25616).
    assert_ok(
        &drop_collection(&mut client, "", "B").await,
        "DropCollection B",
    );
    assert_ok(
        &create_alias(&mut client, "", "B", "A").await,
        "CreateAlias B->A",
    );
    assert_eq!(target_of(&describe_alias(&mut client, "", "B").await), "A");
}

#[tokio::test]
async fn row04_create_alias_to_missing_collection_is_100_with_database() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    let status = create_alias(&mut client, "", "Y", "X").await;
    assert_error_msg(
        &status,
        100,
        CollectionNotExists,
        "collection not found[database=default][collection=X]",
        "CreateAlias Y->missing X",
    );
    assert_alias_not_found(&describe_alias(&mut client, "", "Y").await, "default", "Y");
}

#[tokio::test]
async fn row05_create_alias_whose_target_is_an_alias_is_100() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    let status = create_alias(&mut client, "", "W", "Z").await;
    assert_error_msg(
        &status,
        100,
        CollectionNotExists,
        "collection not found[database=default][collection=Z]",
        "CreateAlias W->Z where Z is an alias",
    );
    assert_alias_not_found(&describe_alias(&mut client, "", "W").await, "default", "W");
    assert_eq!(
        aliases_listed(&list_aliases(&mut client, "", "A").await),
        ["Z"]
    );
}

#[tokio::test]
async fn row06_create_collection_named_like_an_alias_is_refused() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    let status = create_collection(&mut client, "Z").await;
    assert_error_msg(
        &status,
        65535,
        UnexpectedError,
        "collection name [Z] conflicts with an existing alias, please choose a unique name",
        "CreateCollection Z where Z is an alias",
    );
    assert_eq!(sorted(show_collections(&mut client, "").await), ["A", "B"]);
    assert_eq!(target_of(&describe_alias(&mut client, "", "Z").await), "A");
    // Once the alias is gone the name is free.
    assert_ok(&drop_alias(&mut client, "", "Z").await, "DropAlias Z");
    assert_ok(
        &create_collection(&mut client, "Z").await,
        "CreateCollection Z",
    );
    assert_eq!(
        sorted(show_collections(&mut client, "").await),
        ["A", "B", "Z"]
    );
}

#[tokio::test]
async fn row07_alter_alias_to_missing_collection_is_100_without_database() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    let status = alter_alias(&mut client, "", "Z", "X").await;
    assert_error_msg(
        &status,
        100,
        CollectionNotExists,
        "collection not found[collection=X]",
        "AlterAlias Z->missing X",
    );
    assert_eq!(target_of(&describe_alias(&mut client, "", "Z").await), "A");
}

#[tokio::test]
async fn row08_alter_missing_alias_is_1600_and_creates_nothing() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    let status = alter_alias(&mut client, "", "Y", "B").await;
    assert_error_msg(
        &status,
        1600,
        UnexpectedError,
        "alias not found[database=default][alias=Y]",
        "AlterAlias of missing Y",
    );
    assert_alias_not_found(&describe_alias(&mut client, "", "Y").await, "default", "Y");
    assert_eq!(
        aliases_listed(&list_aliases(&mut client, "", "").await),
        ["Z"]
    );
}

#[tokio::test]
async fn row09_alter_alias_named_like_a_collection_is_1601_first() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    // A -> A, A -> B (target exists), A -> X (target missing): the 1601 check comes first.
    for target in ["A", "B", "X"] {
        let status = alter_alias(&mut client, "", "A", target).await;
        assert_error_msg(
            &status,
            1601,
            UnexpectedError,
            "alias and collection name conflict[database=default][alias=A]",
            &format!("AlterAlias A->{target}"),
        );
    }
    assert_alias_not_found(&describe_alias(&mut client, "", "A").await, "default", "A");
}

#[tokio::test]
async fn row10_alter_alias_to_another_alias_is_100_and_keeps_the_alias() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    create_alias_in(&mut client, "", "W", "B").await;
    let status = alter_alias(&mut client, "", "Z", "W").await;
    assert_error_msg(
        &status,
        100,
        CollectionNotExists,
        "collection not found[collection=W]",
        "AlterAlias Z->W where W is an alias",
    );
    assert_eq!(target_of(&describe_alias(&mut client, "", "Z").await), "A");
    assert_eq!(target_of(&describe_alias(&mut client, "", "W").await), "B");
}

#[tokio::test]
async fn row11_alter_alias_to_its_current_target_is_a_no_op() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    let before = describe_collection(&mut client, "", "A").await;
    assert_ok(
        &alter_alias(&mut client, "", "Z", "A").await,
        "AlterAlias Z->A",
    );
    assert_eq!(target_of(&describe_alias(&mut client, "", "Z").await), "A");
    let after = describe_collection(&mut client, "", "A").await;
    assert_eq!(after.aliases, ["Z"]);
    assert_eq!(after.collection_id, before.collection_id);
    // A real retarget works and moves the alias between the collections' alias lists.
    assert_ok(
        &alter_alias(&mut client, "", "Z", "B").await,
        "AlterAlias Z->B",
    );
    assert_eq!(target_of(&describe_alias(&mut client, "", "Z").await), "B");
    assert!(aliases_listed(&list_aliases(&mut client, "", "A").await).is_empty());
    assert_eq!(
        aliases_listed(&list_aliases(&mut client, "", "B").await),
        ["Z"]
    );
}

#[tokio::test]
async fn row12_drop_existing_alias() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    assert_ok(&drop_alias(&mut client, "", "Z").await, "DropAlias Z");
    assert_alias_not_found(&describe_alias(&mut client, "", "Z").await, "default", "Z");
    assert!(aliases_listed(&list_aliases(&mut client, "", "").await).is_empty());
    assert!(aliases_listed(&list_aliases(&mut client, "", "A").await).is_empty());
    assert!(
        describe_collection(&mut client, "", "A")
            .await
            .aliases
            .is_empty()
    );
    assert!(!has_collection(&mut client, "", "Z").await);
    // The collection is untouched and the alias name can be used again.
    assert!(has_collection(&mut client, "", "A").await);
    assert_ok(
        &create_alias(&mut client, "", "Z", "B").await,
        "CreateAlias Z->B",
    );
    assert_eq!(target_of(&describe_alias(&mut client, "", "Z").await), "B");
}

#[tokio::test]
async fn row13_drop_missing_alias_succeeds() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    assert_ok(
        &drop_alias(&mut client, "", "Y").await,
        "DropAlias missing Y",
    );
    // Twice in a row (the second drop finds nothing).
    assert_ok(&drop_alias(&mut client, "", "Z").await, "DropAlias Z");
    assert_ok(&drop_alias(&mut client, "", "Z").await, "DropAlias Z again");
    assert!(aliases_listed(&list_aliases(&mut client, "", "").await).is_empty());
}

/// Row 14: current source relaxed the check (PR #43064) without a verified answer; the
/// only observed behaviour is 2.3.5's 1100 with the alias messages of §2.1.
#[tokio::test]
async fn row14_drop_alias_with_invalid_name_is_1100() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    let cases = [
        (
            "",
            "collection alias should not be empty: invalid parameter",
        ),
        (
            "12-s",
            "Invalid collection alias: 12-s. the first character of a collection alias must be an underscore or letter: invalid parameter",
        ),
        (
            "a b",
            "Invalid collection alias: a b. collection alias can only contain numbers, letters and underscores: invalid parameter",
        ),
    ];
    for (alias, message) in cases {
        let status = drop_alias(&mut client, "", alias).await;
        assert_error_msg(
            &status,
            1100,
            IllegalArgument,
            message,
            &format!("DropAlias {alias:?}"),
        );
    }
    assert_eq!(target_of(&describe_alias(&mut client, "", "Z").await), "A");
}

#[tokio::test]
async fn row15_describe_alias_returns_alias_target_and_echoed_database() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    let response = describe_alias(&mut client, "", "Z").await;
    assert_ok(response.status.as_ref().unwrap(), "DescribeAlias Z");
    assert_eq!(
        (
            response.db_name.as_str(),
            response.alias.as_str(),
            response.collection.as_str()
        ),
        ("", "Z", "A"),
        "db_name echoes the empty request field"
    );
    let response = describe_alias(&mut client, "default", "Z").await;
    assert_ok(response.status.as_ref().unwrap(), "DescribeAlias default.Z");
    assert_eq!(
        (
            response.db_name.as_str(),
            response.alias.as_str(),
            response.collection.as_str()
        ),
        ("default", "Z", "A")
    );
}

#[tokio::test]
async fn row16_describe_missing_alias_is_1600_with_empty_fields() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    assert_alias_not_found(&describe_alias(&mut client, "", "Y").await, "default", "Y");
    // A collection name is not an alias either.
    assert_alias_not_found(&describe_alias(&mut client, "", "A").await, "default", "A");
}

#[tokio::test]
async fn row17_list_aliases_of_the_database() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    create_alias_in(&mut client, "", "Y", "B").await;
    create_alias_in(&mut client, "", "X", "A").await;
    create_database(&mut client, "db2").await;
    create_collection_in(&mut client, "db2", "C").await;
    create_alias_in(&mut client, "db2", "W", "C").await;
    let response = list_aliases(&mut client, "", "").await;
    assert_eq!(aliases_listed(&response), ["X", "Y", "Z"]);
    assert_eq!(
        (response.db_name.as_str(), response.collection_name.as_str()),
        ("", "")
    );
    let response = list_aliases(&mut client, "db2", "").await;
    assert_eq!(aliases_listed(&response), ["W"]);
    assert_eq!(response.db_name, "db2", "db_name echoes the request field");
}

#[tokio::test]
async fn row18_list_aliases_of_a_collection() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    create_alias_in(&mut client, "", "X", "A").await;
    create_alias_in(&mut client, "", "Y", "B").await;
    let response = list_aliases(&mut client, "", "A").await;
    assert_eq!(aliases_listed(&response), ["X", "Z"]);
    assert_eq!(
        (response.db_name.as_str(), response.collection_name.as_str()),
        ("", ""),
        "collection_name / db_name are left empty"
    );
    assert_eq!(
        aliases_listed(&list_aliases(&mut client, "", "B").await),
        ["Y"]
    );
}

#[tokio::test]
async fn row19_list_aliases_of_missing_collection_is_100() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    let response = list_aliases(&mut client, "", "X").await;
    assert_error_msg(
        response.status.as_ref().unwrap(),
        100,
        CollectionNotExists,
        "collection not found[collection=X]",
        "ListAliases of missing X",
    );
    assert!(response.aliases.is_empty());
}

#[tokio::test]
async fn row20_list_aliases_by_alias_is_100() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    let response = list_aliases(&mut client, "", "Z").await;
    assert_error_msg(
        response.status.as_ref().unwrap(),
        100,
        CollectionNotExists,
        "collection not found[collection=Z]",
        "ListAliases where the collection is the alias Z",
    );
    assert!(response.aliases.is_empty());
}

#[tokio::test]
async fn row21_drop_collection_via_alias_is_refused() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    let status = drop_collection(&mut client, "", "Z").await;
    assert_error_msg(
        &status,
        65535,
        UnexpectedError,
        "cannot drop the collection via alias = Z",
        "DropCollection via alias Z",
    );
    assert!(has_collection(&mut client, "", "A").await);
    assert_eq!(target_of(&describe_alias(&mut client, "", "Z").await), "A");
    assert_eq!(sorted(show_collections(&mut client, "").await), ["A", "B"]);
}

#[tokio::test]
async fn row22_drop_collection_with_aliases_is_refused() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    // One alias.
    let status = drop_collection(&mut client, "", "A").await;
    assert_error_msg(
        &status,
        65535,
        UnexpectedError,
        "unable to drop the collection [A] because it has associated aliases [Z], please remove all aliases before dropping the collection",
        "DropCollection A with alias Z",
    );
    assert!(has_collection(&mut client, "", "A").await);
    assert_eq!(target_of(&describe_alias(&mut client, "", "Z").await), "A");

    // Two aliases, printed with Go's %v of a slice (`[a b]`); Milvus does not order them.
    create_alias_in(&mut client, "", "Y", "A").await;
    let status = drop_collection(&mut client, "", "A").await;
    let expected = |list: &str| {
        format!(
            "unable to drop the collection [A] because it has associated aliases [{list}], please remove all aliases before dropping the collection"
        )
    };
    let message = if status.reason == expected("Z Y") {
        expected("Z Y")
    } else {
        expected("Y Z")
    };
    assert_error_msg(
        &status,
        65535,
        UnexpectedError,
        &message,
        "DropCollection A with aliases Y, Z",
    );
    assert_eq!(
        aliases_listed(&list_aliases(&mut client, "", "A").await),
        ["Y", "Z"]
    );

    // After the aliases are dropped, the drop succeeds and the names are free again.
    assert_ok(&drop_alias(&mut client, "", "Z").await, "DropAlias Z");
    assert_ok(&drop_alias(&mut client, "", "Y").await, "DropAlias Y");
    assert_ok(
        &drop_collection(&mut client, "", "A").await,
        "DropCollection A",
    );
    assert!(!has_collection(&mut client, "", "A").await);
    assert_eq!(show_collections(&mut client, "").await, ["B"]);
    assert_ok(
        &create_alias(&mut client, "", "Z", "B").await,
        "CreateAlias Z->B",
    );
    assert_eq!(target_of(&describe_alias(&mut client, "", "Z").await), "B");
}

#[tokio::test]
async fn row23_drop_missing_collection_succeeds() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    assert_ok(
        &drop_collection(&mut client, "", "X").await,
        "DropCollection missing X",
    );
    assert_ok(
        &drop_collection(&mut client, "", "B").await,
        "DropCollection B",
    );
    assert_ok(
        &drop_collection(&mut client, "", "B").await,
        "DropCollection B again",
    );
    assert_eq!(show_collections(&mut client, "").await, ["A"]);
}

#[tokio::test]
async fn row24_collection_and_partition_rpcs_via_alias_act_on_the_target() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    assert!(
        has_collection(&mut client, "", "Z").await,
        "HasCollection Z"
    );
    assert_eq!(show_partitions(&mut client, "", "Z").await, ["_default"]);

    let status = client
        .create_partition(CreatePartitionRequest {
            collection_name: "Z".into(),
            partition_name: "p1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&status, "CreatePartition via alias");
    assert_eq!(
        show_partitions(&mut client, "", "A").await,
        ["_default", "p1"]
    );
    assert_eq!(show_partitions(&mut client, "", "B").await, ["_default"]);

    let has = client
        .has_partition(HasPartitionRequest {
            collection_name: "Z".into(),
            partition_name: "p1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(has.status.as_ref().unwrap(), "HasPartition via alias");
    assert!(has.value);

    let status = client
        .drop_partition(DropPartitionRequest {
            collection_name: "Z".into(),
            partition_name: "p1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&status, "DropPartition via alias");
    assert_eq!(show_partitions(&mut client, "", "A").await, ["_default"]);

    // After AlterAlias the same calls follow the new target.
    assert_ok(
        &alter_alias(&mut client, "", "Z", "B").await,
        "AlterAlias Z->B",
    );
    let status = client
        .create_partition(CreatePartitionRequest {
            collection_name: "Z".into(),
            partition_name: "p2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&status, "CreatePartition via retargeted alias");
    assert_eq!(
        show_partitions(&mut client, "", "B").await,
        ["_default", "p2"]
    );
    assert_eq!(show_partitions(&mut client, "", "A").await, ["_default"]);
}

// ---- §2.4 DescribeCollection via alias ----

#[tokio::test]
async fn describe_collection_by_alias() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    create_alias_in(&mut client, "", "X", "A").await;
    let direct = describe_collection(&mut client, "", "A").await;
    assert_ok(direct.status.as_ref().unwrap(), "DescribeCollection A");

    let via = describe_collection(&mut client, "", "Z").await;
    assert_ok(via.status.as_ref().unwrap(), "DescribeCollection Z");
    assert_eq!(via.collection_name, "Z", "requested name echoed");
    assert_eq!(
        via.schema.as_ref().unwrap().name,
        "A",
        "schema.name is real"
    );
    assert_eq!(sorted(via.aliases.clone()), ["X", "Z"], "every alias of A");
    assert_eq!(
        via.db_name, "default",
        "db_name filled for an empty request"
    );
    assert_eq!(via.collection_id, direct.collection_id);
    assert_ne!(via.collection_id, 0);
    assert_eq!(via.schema, direct.schema);

    assert_eq!(direct.collection_name, "A");
    assert_eq!(sorted(direct.aliases.clone()), ["X", "Z"]);
    assert_eq!(direct.db_name, "default");
    assert!(
        describe_collection(&mut client, "", "B")
            .await
            .aliases
            .is_empty()
    );

    // In another database, through the header only: db_name is still filled.
    create_database(&mut client, "db2").await;
    create_collection_in(&mut client, "db2", "C").await;
    create_alias_in(&mut client, "db2", "Q", "C").await;
    let via = client
        .describe_collection(with_header(
            DescribeCollectionRequest {
                collection_name: "Q".into(),
                ..Default::default()
            },
            Some("db2"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ok(via.status.as_ref().unwrap(), "DescribeCollection db2.Q");
    assert_eq!(
        (
            via.collection_name.as_str(),
            via.schema.as_ref().unwrap().name.as_str(),
            via.db_name.as_str()
        ),
        ("Q", "C", "db2")
    );
    assert_eq!(via.aliases, ["Q"]);
}

// ---- §2.5 per-database aliases ----

#[tokio::test]
async fn aliases_are_per_database() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    create_database(&mut client, "db2").await;
    create_collection_in(&mut client, "db2", "C").await;

    // The same alias name in two databases, each pointing into its own database.
    create_alias_in(&mut client, "db2", "Z", "C").await;
    assert_eq!(target_of(&describe_alias(&mut client, "", "Z").await), "A");
    assert_eq!(
        target_of(&describe_alias(&mut client, "db2", "Z").await),
        "C"
    );
    assert_eq!(
        aliases_listed(&list_aliases(&mut client, "db2", "").await),
        ["Z"]
    );
    assert_eq!(
        aliases_listed(&list_aliases(&mut client, "", "").await),
        ["Z"]
    );
    let described = describe_collection(&mut client, "db2", "Z").await;
    assert_eq!(
        (
            described.schema.as_ref().unwrap().name.as_str(),
            described.db_name.as_str()
        ),
        ("C", "db2")
    );

    // Targets are looked up in the alias's own database only.
    let status = create_alias(&mut client, "db2", "Y", "A").await;
    assert_error_msg(
        &status,
        100,
        CollectionNotExists,
        "collection not found[database=db2][collection=A]",
        "CreateAlias db2.Y -> default's A",
    );
    let status = alter_alias(&mut client, "db2", "Z", "A").await;
    assert_error_msg(
        &status,
        100,
        CollectionNotExists,
        "collection not found[collection=A]",
        "AlterAlias db2.Z -> default's A",
    );
    let status = alter_alias(&mut client, "", "Z", "C").await;
    assert_error_msg(
        &status,
        100,
        CollectionNotExists,
        "collection not found[collection=C]",
        "AlterAlias default.Z -> db2's C",
    );
    let response = list_aliases(&mut client, "db2", "A").await;
    assert_error_msg(
        response.status.as_ref().unwrap(),
        100,
        CollectionNotExists,
        "collection not found[collection=A]",
        "ListAliases db2 of default's A",
    );

    // A collection name of another database is a free alias name here.
    create_alias_in(&mut client, "db2", "A", "C").await;
    assert_eq!(
        target_of(&describe_alias(&mut client, "db2", "A").await),
        "C"
    );
    // And a 1601 conflict is reported with the alias's database.
    let status = create_alias(&mut client, "db2", "C", "C").await;
    assert_error_msg(
        &status,
        1601,
        UnexpectedError,
        "alias and collection name conflict[database=db2][alias=C]",
        "CreateAlias db2.C",
    );
    let status = create_alias(&mut client, "db2", "Z", "C").await;
    assert_ok(&status, "CreateAlias db2.Z->C again");
    create_collection_in(&mut client, "db2", "D").await;
    let status = create_alias(&mut client, "db2", "Z", "D").await;
    assert_error_msg(
        &status,
        1602,
        UnexpectedError,
        "Z is alias to another collection: C: alias already exist[database=db2][alias=Z]",
        "CreateAlias db2.Z->D",
    );
    assert_alias_not_found(&describe_alias(&mut client, "db2", "Q").await, "db2", "Q");

    // Dropping one database's alias leaves the other's.
    assert_ok(
        &drop_alias(&mut client, "db2", "Z").await,
        "DropAlias db2.Z",
    );
    assert_alias_not_found(&describe_alias(&mut client, "db2", "Z").await, "db2", "Z");
    assert_eq!(target_of(&describe_alias(&mut client, "", "Z").await), "A");
    // Dropping a collection via an alias is refused per database too.
    let status = drop_collection(&mut client, "db2", "A").await;
    assert_error_msg(
        &status,
        65535,
        UnexpectedError,
        "cannot drop the collection via alias = A",
        "DropCollection db2.A (an alias there)",
    );
    assert!(has_collection(&mut client, "", "A").await);
}

// ---- §2.5 / §5.2 database resolution: field, then `dbname` header, then default ----

/// How a request names its database, and which one it must reach.
struct Route {
    field: &'static str,
    header: Option<&'static str>,
    expect: &'static str,
}

const ROUTES: [Route; 6] = [
    Route {
        field: "db1",
        header: Some("db2"),
        expect: "db1",
    },
    Route {
        field: "default",
        header: Some("db2"),
        expect: "default",
    },
    Route {
        field: "db1",
        header: None,
        expect: "db1",
    },
    Route {
        field: "",
        header: Some("db2"),
        expect: "db2",
    },
    Route {
        field: "",
        header: Some(""),
        expect: "default",
    },
    Route {
        field: "",
        header: None,
        expect: "default",
    },
];

const DATABASES: [&str; 3] = ["default", "db1", "db2"];

impl Route {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        with_header(message, self.header)
    }

    fn label(&self) -> String {
        format!(
            "field {:?}, header {:?} -> {}",
            self.field, self.header, self.expect
        )
    }
}

/// In each of `default`, `db1`, `db2` (= D): collections `c` and `t_D`, alias `z` → `t_D`,
/// alias `y_D` → `c`, partition `only_D` of `c`.
async fn routing_fixture() -> Fixture {
    let server = InProcess::start().await;
    let mut client = server.client().await;
    create_database(&mut client, "db1").await;
    create_database(&mut client, "db2").await;
    for db in DATABASES {
        create_collection_in(&mut client, db, "c").await;
        create_collection_in(&mut client, db, &format!("t_{db}")).await;
        create_alias_in(&mut client, db, "z", &format!("t_{db}")).await;
        create_alias_in(&mut client, db, &format!("y_{db}"), "c").await;
        create_partition(&mut client, db, "c", &format!("only_{db}")).await;
    }
    Fixture {
        _server: server,
        client,
    }
}

async fn create_partition(client: &mut Client, db: &str, collection: &str, partition: &str) {
    let status = client
        .create_partition(CreatePartitionRequest {
            db_name: db.into(),
            collection_name: collection.into(),
            partition_name: partition.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(
        &status,
        &format!("CreatePartition {db}.{collection}.{partition}"),
    );
}

async fn has_partition(client: &mut Client, db: &str, collection: &str, partition: &str) -> bool {
    let response = client
        .has_partition(HasPartitionRequest {
            db_name: db.into(),
            collection_name: collection.into(),
            partition_name: partition.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(response.status.as_ref().unwrap(), "HasPartition");
    response.value
}

/// Asserts `exists(db)` holds exactly for the routed database.
async fn assert_only_in(client: &mut Client, route: &Route, what: &str, name: &str) {
    for db in DATABASES {
        let present = match what {
            "collection" => has_collection(client, db, name).await,
            "alias" => describe_alias(client, db, name)
                .await
                .status
                .is_some_and(|s| s.code == 0),
            "partition" => has_partition(client, db, "c", name).await,
            other => unreachable!("{other}"),
        };
        assert_eq!(
            present,
            db == route.expect,
            "{what} {name} in {db} after a request with {}",
            route.label()
        );
    }
}

/// Asserts `exists(db)` is false exactly for the routed database.
async fn assert_all_but(client: &mut Client, route: &Route, what: &str, name: &str) {
    for db in DATABASES {
        let present = match what {
            "collection" => has_collection(client, db, name).await,
            "alias" => describe_alias(client, db, name)
                .await
                .status
                .is_some_and(|s| s.code == 0),
            "partition" => has_partition(client, db, "c", name).await,
            other => unreachable!("{other}"),
        };
        assert_eq!(
            present,
            db != route.expect,
            "{what} {name} in {db} after a drop with {}",
            route.label()
        );
    }
}

#[tokio::test]
async fn database_resolution_create_collection() {
    let Fixture {
        _server,
        mut client,
    } = routing_fixture().await;
    for (i, route) in ROUTES.iter().enumerate() {
        let name = format!("new_{i}");
        let status = client
            .create_collection(route.request(CreateCollectionRequest {
                db_name: route.field.into(),
                collection_name: name.clone(),
                schema: valid_schema(&name),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_ok(&status, &route.label());
        assert_only_in(&mut client, route, "collection", &name).await;
    }
}

#[tokio::test]
async fn database_resolution_drop_collection() {
    let Fixture {
        _server,
        mut client,
    } = routing_fixture().await;
    for (i, route) in ROUTES.iter().enumerate() {
        let name = format!("drop_{i}");
        for db in DATABASES {
            create_collection_in(&mut client, db, &name).await;
        }
        let status = client
            .drop_collection(route.request(DropCollectionRequest {
                db_name: route.field.into(),
                collection_name: name.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_ok(&status, &route.label());
        assert_all_but(&mut client, route, "collection", &name).await;
    }
}

#[tokio::test]
async fn database_resolution_has_collection() {
    let Fixture {
        _server,
        mut client,
    } = routing_fixture().await;
    for route in &ROUTES {
        for db in DATABASES {
            let response = client
                .has_collection(route.request(HasCollectionRequest {
                    db_name: route.field.into(),
                    collection_name: format!("t_{db}"),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            assert_ok(response.status.as_ref().unwrap(), &route.label());
            assert_eq!(
                response.value,
                db == route.expect,
                "HasCollection t_{db} with {}",
                route.label()
            );
        }
    }
}

#[tokio::test]
async fn database_resolution_describe_collection() {
    let Fixture {
        _server,
        mut client,
    } = routing_fixture().await;
    for route in &ROUTES {
        for name in ["c", "z"] {
            let response = client
                .describe_collection(route.request(DescribeCollectionRequest {
                    db_name: route.field.into(),
                    collection_name: name.into(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            assert_ok(response.status.as_ref().unwrap(), &route.label());
            assert_eq!(response.db_name, route.expect, "{}", route.label());
            let real = if name == "c" {
                "c".to_string()
            } else {
                format!("t_{}", route.expect)
            };
            assert_eq!(response.schema.unwrap().name, real, "{}", route.label());
        }
    }
}

#[tokio::test]
async fn database_resolution_show_collections() {
    let Fixture {
        _server,
        mut client,
    } = routing_fixture().await;
    for route in &ROUTES {
        let response = client
            .show_collections(route.request(ShowCollectionsRequest {
                db_name: route.field.into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_ok(response.status.as_ref().unwrap(), &route.label());
        let expected = vec!["c".to_string(), format!("t_{}", route.expect)];
        assert_eq!(
            sorted(response.collection_names),
            expected,
            "{}",
            route.label()
        );
    }
}

#[tokio::test]
async fn database_resolution_create_partition() {
    let Fixture {
        _server,
        mut client,
    } = routing_fixture().await;
    for (i, route) in ROUTES.iter().enumerate() {
        let partition = format!("p_{i}");
        let status = client
            .create_partition(route.request(CreatePartitionRequest {
                db_name: route.field.into(),
                collection_name: "c".into(),
                partition_name: partition.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_ok(&status, &route.label());
        assert_only_in(&mut client, route, "partition", &partition).await;
    }
}

#[tokio::test]
async fn database_resolution_drop_partition() {
    let Fixture {
        _server,
        mut client,
    } = routing_fixture().await;
    for (i, route) in ROUTES.iter().enumerate() {
        let partition = format!("q_{i}");
        for db in DATABASES {
            create_partition(&mut client, db, "c", &partition).await;
        }
        let status = client
            .drop_partition(route.request(DropPartitionRequest {
                db_name: route.field.into(),
                collection_name: "c".into(),
                partition_name: partition.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_ok(&status, &route.label());
        assert_all_but(&mut client, route, "partition", &partition).await;
    }
}

#[tokio::test]
async fn database_resolution_has_partition() {
    let Fixture {
        _server,
        mut client,
    } = routing_fixture().await;
    for route in &ROUTES {
        for db in DATABASES {
            let response = client
                .has_partition(route.request(HasPartitionRequest {
                    db_name: route.field.into(),
                    collection_name: "c".into(),
                    partition_name: format!("only_{db}"),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            assert_ok(response.status.as_ref().unwrap(), &route.label());
            assert_eq!(
                response.value,
                db == route.expect,
                "HasPartition c.only_{db} with {}",
                route.label()
            );
        }
    }
}

#[tokio::test]
async fn database_resolution_show_partitions() {
    let Fixture {
        _server,
        mut client,
    } = routing_fixture().await;
    for route in &ROUTES {
        let response = client
            .show_partitions(route.request(ShowPartitionsRequest {
                db_name: route.field.into(),
                collection_name: "c".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_ok(response.status.as_ref().unwrap(), &route.label());
        assert_eq!(
            sorted(response.partition_names),
            ["_default".to_string(), format!("only_{}", route.expect)],
            "{}",
            route.label()
        );
    }
}

#[tokio::test]
async fn database_resolution_create_alias() {
    let Fixture {
        _server,
        mut client,
    } = routing_fixture().await;
    for (i, route) in ROUTES.iter().enumerate() {
        let alias = format!("a_{i}");
        let status = client
            .create_alias(route.request(CreateAliasRequest {
                db_name: route.field.into(),
                collection_name: format!("t_{}", route.expect),
                alias: alias.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_ok(&status, &route.label());
        assert_only_in(&mut client, route, "alias", &alias).await;
        // A target of another database is not found, and the message names the routed one.
        let other = DATABASES.iter().find(|db| **db != route.expect).unwrap();
        let status = client
            .create_alias(route.request(CreateAliasRequest {
                db_name: route.field.into(),
                collection_name: format!("t_{other}"),
                alias: format!("b_{i}"),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_error_msg(
            &status,
            100,
            CollectionNotExists,
            &format!(
                "collection not found[database={}][collection=t_{other}]",
                route.expect
            ),
            &route.label(),
        );
    }
}

#[tokio::test]
async fn database_resolution_alter_alias() {
    let Fixture {
        _server,
        mut client,
    } = routing_fixture().await;
    for route in &ROUTES {
        let status = client
            .alter_alias(route.request(AlterAliasRequest {
                db_name: route.field.into(),
                collection_name: "c".into(),
                alias: "z".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_ok(&status, &route.label());
        for db in DATABASES {
            let expected = if db == route.expect {
                "c".to_string()
            } else {
                format!("t_{db}")
            };
            assert_eq!(
                target_of(&describe_alias(&mut client, db, "z").await),
                expected,
                "z in {db} after AlterAlias with {}",
                route.label()
            );
        }
        let restore = format!("t_{}", route.expect);
        assert_ok(
            &alter_alias(&mut client, route.expect, "z", &restore).await,
            "restore z",
        );
    }
}

#[tokio::test]
async fn database_resolution_drop_alias() {
    let Fixture {
        _server,
        mut client,
    } = routing_fixture().await;
    for (i, route) in ROUTES.iter().enumerate() {
        let alias = format!("d_{i}");
        for db in DATABASES {
            create_alias_in(&mut client, db, &alias, "c").await;
        }
        let status = client
            .drop_alias(route.request(DropAliasRequest {
                db_name: route.field.into(),
                alias: alias.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_ok(&status, &route.label());
        assert_all_but(&mut client, route, "alias", &alias).await;
    }
}

#[tokio::test]
async fn database_resolution_describe_alias() {
    let Fixture {
        _server,
        mut client,
    } = routing_fixture().await;
    for route in &ROUTES {
        let response = client
            .describe_alias(route.request(DescribeAliasRequest {
                db_name: route.field.into(),
                alias: "z".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_ok(response.status.as_ref().unwrap(), &route.label());
        assert_eq!(
            response.collection,
            format!("t_{}", route.expect),
            "{}",
            route.label()
        );
        assert_eq!(response.alias, "z");
        assert_eq!(
            response.db_name,
            route.field,
            "db_name echoes the request field ({})",
            route.label()
        );
        // A missing alias reports the routed database.
        let response = client
            .describe_alias(route.request(DescribeAliasRequest {
                db_name: route.field.into(),
                alias: "nope".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_alias_not_found(&response, route.expect, "nope");
    }
}

#[tokio::test]
async fn database_resolution_list_aliases() {
    let Fixture {
        _server,
        mut client,
    } = routing_fixture().await;
    for route in &ROUTES {
        let response = client
            .list_aliases(route.request(ListAliasesRequest {
                db_name: route.field.into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            aliases_listed(&response),
            [format!("y_{}", route.expect), "z".to_string()],
            "{}",
            route.label()
        );
        assert_eq!(response.db_name, route.field, "{}", route.label());
        let response = client
            .list_aliases(route.request(ListAliasesRequest {
                db_name: route.field.into(),
                collection_name: format!("t_{}", route.expect),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(aliases_listed(&response), ["z"], "{}", route.label());
    }
}

// ---- §2.5 unknown databases ----

/// How the unknown database is named: in the field, or in the header only.
const UNKNOWN: [(&str, Option<&str>); 2] = [("nope", None), ("", Some("nope"))];

#[track_caller]
fn assert_database_not_found(status: &Status, what: &str) {
    assert_error_msg(
        status,
        800,
        UnexpectedError,
        "database not found[database=nope]",
        what,
    );
}

#[tokio::test]
async fn unknown_database_is_800_on_alias_rpcs() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    for (field, header) in UNKNOWN {
        let what = |rpc: &str| format!("{rpc} with field {field:?}, header {header:?}");
        let status = client
            .create_alias(with_header(
                CreateAliasRequest {
                    db_name: field.into(),
                    collection_name: "A".into(),
                    alias: "Y".into(),
                    ..Default::default()
                },
                header,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_database_not_found(&status, &what("CreateAlias"));
        let status = client
            .alter_alias(with_header(
                AlterAliasRequest {
                    db_name: field.into(),
                    collection_name: "A".into(),
                    alias: "Z".into(),
                    ..Default::default()
                },
                header,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_database_not_found(&status, &what("AlterAlias"));
        let status = client
            .drop_alias(with_header(
                DropAliasRequest {
                    db_name: field.into(),
                    alias: "Z".into(),
                    ..Default::default()
                },
                header,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_database_not_found(&status, &what("DropAlias"));
        let response = client
            .describe_alias(with_header(
                DescribeAliasRequest {
                    db_name: field.into(),
                    alias: "Z".into(),
                    ..Default::default()
                },
                header,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_database_not_found(response.status.as_ref().unwrap(), &what("DescribeAlias"));
        assert_eq!(response.collection, "");
        for collection in ["", "A"] {
            let response = client
                .list_aliases(with_header(
                    ListAliasesRequest {
                        db_name: field.into(),
                        collection_name: collection.into(),
                        ..Default::default()
                    },
                    header,
                ))
                .await
                .unwrap()
                .into_inner();
            assert_database_not_found(
                response.status.as_ref().unwrap(),
                &what(&format!("ListAliases({collection:?})")),
            );
            assert!(response.aliases.is_empty());
        }
    }
    // Nothing changed in default.
    assert_eq!(target_of(&describe_alias(&mut client, "", "Z").await), "A");
    assert_eq!(
        aliases_listed(&list_aliases(&mut client, "", "").await),
        ["Z"]
    );
}

#[tokio::test]
async fn unknown_database_on_collection_rpcs() {
    let Fixture {
        _server,
        mut client,
    } = fixture().await;
    for (field, header) in UNKNOWN {
        let what = |rpc: &str| format!("{rpc} with field {field:?}, header {header:?}");
        let response = client
            .show_collections(with_header(
                ShowCollectionsRequest {
                    db_name: field.into(),
                    ..Default::default()
                },
                header,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_database_not_found(response.status.as_ref().unwrap(), &what("ShowCollections"));
        assert!(response.collection_names.is_empty());

        let status = client
            .create_collection(with_header(
                CreateCollectionRequest {
                    db_name: field.into(),
                    collection_name: "N".into(),
                    schema: valid_schema("N"),
                    ..Default::default()
                },
                header,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_database_not_found(&status, &what("CreateCollection"));

        let status = client
            .drop_collection(with_header(
                DropCollectionRequest {
                    db_name: field.into(),
                    collection_name: "A".into(),
                    ..Default::default()
                },
                header,
            ))
            .await
            .unwrap()
            .into_inner();
        // A missing database is success, like a missing collection (rootcoord
        // dropCollectionTask, Milvus >= 2.4.18 / 2.5).
        assert_ok(&status, &what("DropCollection"));

        let status = client
            .create_partition(with_header(
                CreatePartitionRequest {
                    db_name: field.into(),
                    collection_name: "A".into(),
                    partition_name: "p".into(),
                    ..Default::default()
                },
                header,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_database_not_found(&status, &what("CreatePartition"));

        // DescribeCollection: the database is looked up first (Milvus 2.5 meta_table.go
        // getCollectionByNameInternal), so 800.
        let response = client
            .describe_collection(with_header(
                DescribeCollectionRequest {
                    db_name: field.into(),
                    collection_name: "A".into(),
                    ..Default::default()
                },
                header,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_database_not_found(
            response.status.as_ref().unwrap(),
            &what("DescribeCollection"),
        );

        // HasCollection: success, false (rootcoord answers `err == nil`; inferred).
        let response = client
            .has_collection(with_header(
                HasCollectionRequest {
                    db_name: field.into(),
                    collection_name: "A".into(),
                    ..Default::default()
                },
                header,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_ok(response.status.as_ref().unwrap(), &what("HasCollection"));
        assert!(!response.value);
    }
    assert_eq!(sorted(show_collections(&mut client, "").await), ["A", "B"]);
}
