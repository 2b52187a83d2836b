//! `milvus.proto.milvus.MilvusService` over the meta engine: request decoding, name
//! validation, database resolution and response shaping. Decisions live in
//! [`crate::meta`]; this layer only translates.
//!
//! This server keeps **metadata only**: databases, collections (schemas, partitions),
//! aliases, and the index/load *metadata* pymilvus' quick setup asks for. It stores no
//! vectors and serves no search; RPCs it does not declare answer gRPC `UNIMPLEMENTED`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tonic::{Request, Response, Status};

use super::engine::Engine;
use crate::meta::error::{MetaError, MetaResult, code, status_of, success};
use crate::meta::names::{
    resolve_database, validate_alias, validate_collection_name, validate_database_name,
    validate_partition_name,
};
use crate::meta::schema::{
    check_request_name, prepare_create_collection, validate_consistency_level, validate_properties,
};
use crate::meta::table::Resolved;
use crate::meta::tso::physical_ms;
use crate::meta::{Ddl, MetaTable, Timestamp};
use crate::proto::api::milvus_service_server::MilvusService;
use crate::proto::api::*;
use crate::proto::common::{self, IndexState, LoadState, StateCode};

/// The version string GetVersion and Connect report: the Milvus semantics we follow, then
/// our own version, so that SDKs that compare versions see a 2.5 server.
pub fn server_version() -> String {
    format!("v2.5.5-collection-operator-{}", env!("CARGO_PKG_VERSION"))
}

/// The MilvusService implementation.
pub struct CoordinatorService {
    engine: Arc<Engine>,
    next_identifier: AtomicI64,
}

impl CoordinatorService {
    /// A service answering from `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        // Identifiers only need to be non-zero and distinct per connection.
        let seed = (crate::meta::tso::now_ms() as i64) << 8;
        Self {
            engine,
            next_identifier: AtomicI64::new(seed.max(1)),
        }
    }
}

/// The database a request addresses: its `db_name` field, else the `dbname` header, else
/// `default`, for every RPC.
fn database_of<T>(request: &Request<T>, field: &str) -> String {
    let header = request
        .metadata()
        .get("dbname")
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    resolve_database(field, header.as_deref()).to_string()
}

fn reply<T>(message: T) -> Result<Response<T>, Status> {
    Ok(Response::new(message))
}

fn status_reply(result: MetaResult<impl Sized>) -> Result<Response<common::Status>, Status> {
    reply(status_of(&result))
}

/// Looks a name up as a collection or an alias, as of `at`, in database `db`.
fn resolve_in(table: &MetaTable, db: &str, name: &str, at: Timestamp) -> Option<Resolved> {
    let db = table.database(db, at)?;
    table.resolve(db.id, name, at)
}

/// Looks a name up as [`resolve_in`] does, answering Milvus's error when it is missing:
/// 800 for the database, else 100 for the collection.
fn resolve_or_not_found(
    table: &MetaTable,
    db: &str,
    name: &str,
    at: Timestamp,
) -> MetaResult<Resolved> {
    let db_record = table
        .database(db, at)
        .ok_or_else(|| MetaError::database_not_found(db))?;
    table
        .resolve(db_record.id, name, at)
        .ok_or_else(|| MetaError::collection_not_found_in_db(db, name))
}

/// Validates an alias and its target, in Milvus's order (the alias first).
fn validate_alias_and_target(alias: &str, collection: &str) -> MetaResult<(String, String)> {
    let alias = validate_alias(alias)?;
    let collection = validate_collection_name(collection)?;
    Ok((alias.into(), collection.into()))
}

impl CoordinatorService {
    /// Runs a validated DDL (or answers the validation error) and replies with its status.
    async fn run_ddl(&self, ddl: MetaResult<Ddl>) -> Result<Response<common::Status>, Status> {
        let result = match ddl {
            Ok(ddl) => self.engine.execute(ddl).await.map(|_| ()),
            Err(error) => Err(error),
        };
        status_reply(result)
    }
}

#[tonic::async_trait]
impl MilvusService for CoordinatorService {
    async fn connect(
        &self,
        request: Request<ConnectRequest>,
    ) -> Result<Response<ConnectResponse>, Status> {
        let db = database_of(&request, "");
        if self
            .engine
            .read(0, |table, at| table.database(&db, at).is_none())
        {
            let error = MetaError::database_not_found(&db);
            return reply(ConnectResponse {
                status: Some(error.to_status()),
                ..Default::default()
            });
        }
        let identifier = self.next_identifier.fetch_add(1, Ordering::Relaxed);
        let server_info = common::ServerInfo {
            build_tags: server_version(),
            build_time: String::new(),
            git_commit: String::new(),
            go_version: "rust (collection-operator coordinator, metadata only)".into(),
            deploy_mode: "STANDALONE".into(),
            reserved: Default::default(),
        };
        reply(ConnectResponse {
            status: Some(success()),
            server_info: Some(server_info),
            identifier,
        })
    }

    async fn get_version(
        &self,
        _: Request<GetVersionRequest>,
    ) -> Result<Response<GetVersionResponse>, Status> {
        reply(GetVersionResponse {
            status: Some(success()),
            version: server_version(),
        })
    }

    async fn check_health(
        &self,
        _: Request<CheckHealthRequest>,
    ) -> Result<Response<CheckHealthResponse>, Status> {
        // Unhealthy while the store refuses writes (a full disk, say); the check may reopen
        // the store, so it runs off the async workers. As Milvus's coordinators answer
        // (internal/querycoordv2/services.go, Server.CheckHealth): IsHealthy false with the
        // reasons, and no error status.
        let store = self.engine.store();
        let health = tokio::task::spawn_blocking(move || store.health())
            .await
            .unwrap_or_else(|error| Err(format!("meta store health check failed: {error}")));
        reply(CheckHealthResponse {
            status: Some(success()),
            is_healthy: health.is_ok(),
            reasons: health.err().into_iter().collect(),
            quota_states: Vec::new(),
        })
    }

    async fn get_component_states(
        &self,
        _: Request<GetComponentStatesRequest>,
    ) -> Result<Response<ComponentStates>, Status> {
        let state = ComponentInfo {
            node_id: 1,
            role: "proxy".into(),
            state_code: StateCode::Healthy as i32,
            extra_info: Vec::new(),
        };
        reply(ComponentStates {
            state: Some(state),
            subcomponent_states: Vec::new(),
            status: Some(success()),
        })
    }

    async fn alloc_timestamp(
        &self,
        _: Request<AllocTimestampRequest>,
    ) -> Result<Response<AllocTimestampResponse>, Status> {
        match self.engine.allocate_timestamp().await {
            Ok(timestamp) => reply(AllocTimestampResponse {
                status: Some(success()),
                timestamp,
            }),
            Err(error) => reply(AllocTimestampResponse {
                status: Some(error.to_status()),
                timestamp: 0,
            }),
        }
    }

    // ---- databases ----

    async fn create_database(
        &self,
        request: Request<CreateDatabaseRequest>,
    ) -> Result<Response<common::Status>, Status> {
        let req = request.into_inner();
        let ddl = validate_database_name(&req.db_name).and_then(|name| {
            validate_properties("database properties", &req.properties)?;
            Ok(Ddl::CreateDatabase {
                name: name.into(),
                properties: req.properties.clone(),
            })
        });
        self.run_ddl(ddl).await
    }

    async fn drop_database(
        &self,
        request: Request<DropDatabaseRequest>,
    ) -> Result<Response<common::Status>, Status> {
        let ddl = validate_database_name(&request.get_ref().db_name)
            .map(|name| Ddl::DropDatabase { name: name.into() });
        self.run_ddl(ddl).await
    }

    async fn list_databases(
        &self,
        _: Request<ListDatabasesRequest>,
    ) -> Result<Response<ListDatabasesResponse>, Status> {
        let databases = self.engine.read(0, |table, at| table.databases(at));
        reply(ListDatabasesResponse {
            status: Some(success()),
            db_names: databases.iter().map(|db| db.name.clone()).collect(),
            created_timestamp: databases.iter().map(|db| db.created_ts).collect(),
            db_ids: databases.iter().map(|db| db.id).collect(),
        })
    }

    async fn describe_database(
        &self,
        request: Request<DescribeDatabaseRequest>,
    ) -> Result<Response<DescribeDatabaseResponse>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let found = self
            .engine
            .read(0, |table, at| table.database(&db, at).cloned());
        match found {
            Some(record) => reply(DescribeDatabaseResponse {
                status: Some(success()),
                db_name: record.name.clone(),
                db_id: record.id,
                created_timestamp: record.created_ts,
                properties: record.properties.clone(),
            }),
            None => reply(DescribeDatabaseResponse {
                status: Some(MetaError::database_not_found(&db).to_status()),
                ..Default::default()
            }),
        }
    }

    // ---- collections ----

    async fn create_collection(
        &self,
        request: Request<CreateCollectionRequest>,
    ) -> Result<Response<common::Status>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let req = request.into_inner();
        let ddl = prepare_create_collection(&req.schema, req.shards_num).and_then(|schema| {
            validate_consistency_level(req.consistency_level)?;
            validate_properties("collection properties", &req.properties)?;
            if let Err(mismatch) = check_request_name(&req.collection_name, &schema) {
                // Rootcoord looks the database up before it compares the names.
                let missing = self
                    .engine
                    .read(0, |table, at| table.database(&db, at).is_none());
                return Err(if missing {
                    MetaError::database_not_found(&db)
                } else {
                    mismatch
                });
            }
            Ok(Ddl::CreateCollection {
                db,
                schema,
                shards_num: req.shards_num,
                consistency_level: req.consistency_level,
                properties: req.properties,
            })
        });
        self.run_ddl(ddl).await
    }

    async fn drop_collection(
        &self,
        request: Request<DropCollectionRequest>,
    ) -> Result<Response<common::Status>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let ddl = validate_collection_name(&request.get_ref().collection_name).map(|name| {
            Ddl::DropCollection {
                db,
                name: name.into(),
            }
        });
        self.run_ddl(ddl).await
    }

    async fn has_collection(
        &self,
        request: Request<HasCollectionRequest>,
    ) -> Result<Response<BoolResponse>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let req = request.get_ref();
        let name = match validate_collection_name(&req.collection_name) {
            Ok(name) => name,
            Err(error) => {
                return reply(BoolResponse {
                    status: Some(error.to_status()),
                    value: false,
                });
            }
        };
        let value = self.engine.read(req.time_stamp, |table, at| {
            resolve_in(table, &db, name, at).is_some()
        });
        reply(BoolResponse {
            status: Some(success()),
            value,
        })
    }

    async fn describe_collection(
        &self,
        request: Request<DescribeCollectionRequest>,
    ) -> Result<Response<DescribeCollectionResponse>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let req = request.into_inner();
        let requested_name = req.collection_name.trim().to_string();
        if !(requested_name.is_empty() && req.collection_id != 0)
            && let Err(error) = validate_collection_name(&requested_name)
        {
            return reply(DescribeCollectionResponse {
                status: Some(error.to_status()),
                ..Default::default()
            });
        }
        let shown = if requested_name.is_empty() {
            req.collection_id.to_string()
        } else {
            requested_name.clone()
        };
        // A missing database is 800 (rootcoord's meta table looks the database up first).
        let found: MetaResult<_> = self.engine.read(req.time_stamp, |table, at| {
            let db_record = table
                .database(&db, at)
                .ok_or_else(|| MetaError::database_not_found(&db))?
                .clone();
            let collection = if requested_name.is_empty() && req.collection_id != 0 {
                table
                    .collection_by_id(req.collection_id, at)
                    .filter(|c| c.db_id == db_record.id)
                    .cloned()
            } else {
                table
                    .resolve(db_record.id, &requested_name, at)
                    .map(|r| r.collection)
            }
            .ok_or_else(|| MetaError::describe_collection_not_found(&db, &shown))?;
            let aliases = table.aliases_of(collection.id, at);
            Ok((db_record, collection, aliases))
        });
        let (db_record, collection, aliases) = match found {
            Ok(found) => found,
            Err(error) => {
                return reply(DescribeCollectionResponse {
                    status: Some(error.to_status()),
                    ..Default::default()
                });
            }
        };
        let mut schema = collection.schema.clone().unwrap_or_default();
        schema.name = collection.name.clone();
        reply(DescribeCollectionResponse {
            status: Some(success()),
            schema: Some(schema),
            collection_id: collection.id,
            virtual_channel_names: collection.virtual_channels.clone(),
            physical_channel_names: collection.physical_channels.clone(),
            created_timestamp: collection.created_ts,
            created_utc_timestamp: physical_ms(collection.created_ts),
            shards_num: collection.shards_num,
            aliases,
            start_positions: Vec::new(),
            consistency_level: collection.consistency_level,
            collection_name: requested_name,
            properties: collection.properties.clone(),
            db_name: db_record.name.clone(),
            num_partitions: collection.partitions.len() as i64,
            db_id: db_record.id,
            request_time: 0,
            update_timestamp: collection.updated_ts,
            update_timestamp_str: physical_ms(collection.updated_ts).to_string(),
        })
    }

    /// Metadata only: this server stores no rows, so `row_count` is always `"0"`. A missing
    /// collection answers like Milvus's proxy (`internal/proxy/task.go`,
    /// `getCollectionStatisticsTask.Execute` fails in `globalMetaCache.GetCollectionID`).
    async fn get_collection_statistics(
        &self,
        request: Request<GetCollectionStatisticsRequest>,
    ) -> Result<Response<GetCollectionStatisticsResponse>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let name = request.get_ref().collection_name.trim();
        if let Err(error) = validate_collection_name(name) {
            return reply(GetCollectionStatisticsResponse {
                status: Some(error.to_status()),
                stats: Vec::new(),
            });
        }
        match self
            .engine
            .read(0, |table, at| resolve_in(table, &db, name, at))
        {
            None => reply(GetCollectionStatisticsResponse {
                status: Some(MetaError::collection_not_found_in_db(&db, name).to_status()),
                stats: Vec::new(),
            }),
            Some(_) => reply(GetCollectionStatisticsResponse {
                status: Some(success()),
                stats: vec![common::KeyValuePair {
                    key: "row_count".to_string(),
                    value: "0".to_string(),
                }],
            }),
        }
    }

    async fn show_collections(
        &self,
        request: Request<ShowCollectionsRequest>,
    ) -> Result<Response<ShowCollectionsResponse>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let req = request.into_inner();
        let engine = self.engine.clone();
        // Listing and filtering are linear in the collections and the names asked for, but
        // both can be large: they run on the blocking pool, not on the workers that serve
        // every other client.
        tokio::task::spawn_blocking(move || show_collections_blocking(&engine, &db, req))
            .await
            .map_err(|error| Status::internal(format!("ShowCollections task failed: {error}")))
            .and_then(reply)
    }

    async fn load_collection(
        &self,
        request: Request<LoadCollectionRequest>,
    ) -> Result<Response<common::Status>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let ddl = validate_collection_name(&request.get_ref().collection_name).map(|name| {
            Ddl::SetLoaded {
                db,
                collection: name.into(),
                loaded: true,
            }
        });
        self.run_ddl(ddl).await
    }

    async fn release_collection(
        &self,
        request: Request<ReleaseCollectionRequest>,
    ) -> Result<Response<common::Status>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let ddl = validate_collection_name(&request.get_ref().collection_name).map(|name| {
            Ddl::SetLoaded {
                db,
                collection: name.into(),
                loaded: false,
            }
        });
        self.run_ddl(ddl).await
    }

    async fn get_loading_progress(
        &self,
        request: Request<GetLoadingProgressRequest>,
    ) -> Result<Response<GetLoadingProgressResponse>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let name = request.get_ref().collection_name.trim();
        let found = self
            .engine
            .read(0, |table, at| resolve_in(table, &db, name, at));
        let status = match found {
            None => MetaError::collection_not_found_in_db(&db, name).to_status(),
            Some(resolved) if !resolved.loaded => MetaError::new(
                101,
                format!(
                    "collection not loaded[collection={}]",
                    resolved.collection.id
                ),
            )
            .to_status(),
            Some(_) => {
                // Metadata only: a loaded collection is immediately fully loaded.
                return reply(GetLoadingProgressResponse {
                    status: Some(success()),
                    progress: 100,
                    refresh_progress: 100,
                });
            }
        };
        reply(GetLoadingProgressResponse {
            status: Some(status),
            ..Default::default()
        })
    }

    async fn get_load_state(
        &self,
        request: Request<GetLoadStateRequest>,
    ) -> Result<Response<GetLoadStateResponse>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let name = request.get_ref().collection_name.trim();
        match self
            .engine
            .read(0, |table, at| resolve_in(table, &db, name, at))
        {
            None => reply(GetLoadStateResponse {
                status: Some(MetaError::collection_not_found_in_db(&db, name).to_status()),
                state: LoadState::NotExist as i32,
            }),
            Some(resolved) => {
                let state = if resolved.loaded {
                    LoadState::Loaded
                } else {
                    LoadState::NotLoad
                };
                reply(GetLoadStateResponse {
                    status: Some(success()),
                    state: state as i32,
                })
            }
        }
    }

    // ---- partitions ----

    async fn create_partition(
        &self,
        request: Request<CreatePartitionRequest>,
    ) -> Result<Response<common::Status>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let req = request.get_ref();
        // The partition name is checked in planning, after the collection is found.
        let ddl =
            validate_collection_name(&req.collection_name).map(|collection| Ddl::CreatePartition {
                db,
                collection: collection.into(),
                partition: req.partition_name.clone(),
            });
        self.run_ddl(ddl).await
    }

    async fn drop_partition(
        &self,
        request: Request<DropPartitionRequest>,
    ) -> Result<Response<common::Status>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let req = request.get_ref();
        // The partition name is checked in planning, after the collection is found.
        let ddl =
            validate_collection_name(&req.collection_name).map(|collection| Ddl::DropPartition {
                db,
                collection: collection.into(),
                partition: req.partition_name.clone(),
            });
        self.run_ddl(ddl).await
    }

    async fn has_partition(
        &self,
        request: Request<HasPartitionRequest>,
    ) -> Result<Response<BoolResponse>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let req = request.get_ref();
        let (name, partition) = match (
            validate_collection_name(&req.collection_name),
            validate_partition_name(&req.partition_name),
        ) {
            (Ok(name), Ok(partition)) => (name, partition),
            (Err(error), _) | (_, Err(error)) => {
                return reply(BoolResponse {
                    status: Some(error.to_status()),
                    value: false,
                });
            }
        };
        match self
            .engine
            .read(0, |table, at| resolve_or_not_found(table, &db, name, at))
        {
            Err(error) => reply(BoolResponse {
                status: Some(error.to_status()),
                value: false,
            }),
            Ok(resolved) => {
                let value = resolved
                    .collection
                    .partitions
                    .iter()
                    .any(|p| p.name == partition);
                reply(BoolResponse {
                    status: Some(success()),
                    value,
                })
            }
        }
    }

    async fn show_partitions(
        &self,
        request: Request<ShowPartitionsRequest>,
    ) -> Result<Response<ShowPartitionsResponse>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let req = request.get_ref();
        // The name is validated first (proxy `showPartitionsTask.PreExecute`), then the
        // database and the collection are looked up.
        let found = validate_collection_name(&req.collection_name).and_then(|name| {
            self.engine
                .read(0, |table, at| resolve_or_not_found(table, &db, name, at))
        });
        let collection = match found {
            Ok(resolved) => resolved.collection,
            Err(error) => {
                return reply(ShowPartitionsResponse {
                    status: Some(error.to_status()),
                    ..Default::default()
                });
            }
        };
        let mut partitions: Vec<_> = collection.partitions.iter().collect();
        if !req.partition_names.is_empty() {
            if let Some(missing) = req
                .partition_names
                .iter()
                .find(|n| !partitions.iter().any(|p| &p.name == *n))
            {
                let error = MetaError::new(
                    code::PARTITION_NOT_FOUND,
                    format!("partition not found[partition={missing}]"),
                );
                return reply(ShowPartitionsResponse {
                    status: Some(error.to_status()),
                    ..Default::default()
                });
            }
            partitions.retain(|p| req.partition_names.contains(&p.name));
        }
        reply(ShowPartitionsResponse {
            status: Some(success()),
            partition_names: partitions.iter().map(|p| p.name.clone()).collect(),
            partition_i_ds: partitions.iter().map(|p| p.id).collect(),
            created_timestamps: partitions.iter().map(|p| p.created_ts).collect(),
            created_utc_timestamps: partitions
                .iter()
                .map(|p| physical_ms(p.created_ts))
                .collect(),
            in_memory_percentages: Vec::new(),
        })
    }

    // ---- aliases ----

    async fn create_alias(
        &self,
        request: Request<CreateAliasRequest>,
    ) -> Result<Response<common::Status>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let req = request.get_ref();
        let ddl = validate_alias_and_target(&req.alias, &req.collection_name).map(
            |(alias, collection)| Ddl::CreateAlias {
                db,
                collection,
                alias,
            },
        );
        self.run_ddl(ddl).await
    }

    async fn alter_alias(
        &self,
        request: Request<AlterAliasRequest>,
    ) -> Result<Response<common::Status>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let req = request.get_ref();
        let ddl = validate_alias_and_target(&req.alias, &req.collection_name).map(
            |(alias, collection)| Ddl::AlterAlias {
                db,
                collection,
                alias,
            },
        );
        self.run_ddl(ddl).await
    }

    async fn drop_alias(
        &self,
        request: Request<DropAliasRequest>,
    ) -> Result<Response<common::Status>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let ddl = validate_alias(&request.get_ref().alias).map(|alias| Ddl::DropAlias {
            db,
            alias: alias.into(),
        });
        self.run_ddl(ddl).await
    }

    async fn describe_alias(
        &self,
        request: Request<DescribeAliasRequest>,
    ) -> Result<Response<DescribeAliasResponse>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let req = request.get_ref();
        let failed = |error: MetaError| {
            reply(DescribeAliasResponse {
                status: Some(error.to_status()),
                ..Default::default()
            })
        };
        let alias = match validate_alias(&req.alias) {
            Ok(alias) => alias,
            Err(error) => return failed(error),
        };
        let found = self.engine.read(0, |table, at| {
            let db_record = table
                .database(&db, at)
                .ok_or_else(|| MetaError::database_not_found(&db))?;
            let record = table
                .alias(db_record.id, alias, at)
                .ok_or_else(|| MetaError::alias_not_found(&db, alias))?;
            table
                .collection_by_id(record.collection_id, at)
                .map(|c| c.name.clone())
                .ok_or_else(|| {
                    MetaError::new(
                        1603,
                        format!(
                            "collection id of alias not found[collectionID={}]",
                            record.collection_id
                        ),
                    )
                })
        });
        match found {
            Ok(collection) => reply(DescribeAliasResponse {
                status: Some(success()),
                db_name: req.db_name.clone(),
                alias: req.alias.clone(),
                collection,
            }),
            Err(error) => failed(error),
        }
    }

    async fn list_aliases(
        &self,
        request: Request<ListAliasesRequest>,
    ) -> Result<Response<ListAliasesResponse>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let req = request.get_ref();
        let collection = req.collection_name.trim();
        if !collection.is_empty()
            && let Err(error) = validate_collection_name(collection)
        {
            return reply(ListAliasesResponse {
                status: Some(error.to_status()),
                ..Default::default()
            });
        }
        let listed: MetaResult<Vec<String>> = self.engine.read(0, |table, at| {
            let db_record = table
                .database(&db, at)
                .ok_or_else(|| MetaError::database_not_found(&db))?;
            if collection.is_empty() {
                return Ok(table
                    .aliases_in(db_record.id, at)
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect());
            }
            let target = table
                .collection_by_name(db_record.id, collection, at)
                .ok_or_else(|| MetaError::collection_not_found(collection))?;
            Ok(table.aliases_of(target.id, at))
        });
        match listed {
            Ok(aliases) => reply(ListAliasesResponse {
                status: Some(success()),
                db_name: req.db_name.clone(),
                collection_name: String::new(),
                aliases,
            }),
            Err(error) => reply(ListAliasesResponse {
                status: Some(error.to_status()),
                ..Default::default()
            }),
        }
    }

    // ---- indexes: metadata only ----

    /// Metadata-only stub: records the index parameters so DescribeIndex can answer; no
    /// index is built (this server holds no vectors).
    async fn create_index(
        &self,
        request: Request<CreateIndexRequest>,
    ) -> Result<Response<common::Status>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let req = request.into_inner();
        let ddl = validate_collection_name(&req.collection_name).and_then(|collection| {
            validate_properties("index params", &req.extra_params)?;
            Ok(Ddl::CreateIndex {
                db,
                collection: collection.into(),
                field: req.field_name.trim().into(),
                index_name: req.index_name.trim().into(),
                params: req.extra_params.clone(),
            })
        });
        self.run_ddl(ddl).await
    }

    /// Metadata-only stub: every recorded index reports state `Finished` with 0 indexed,
    /// 0 total and 0 pending rows (there are no rows), so a serving gate passes at once.
    async fn describe_index(
        &self,
        request: Request<DescribeIndexRequest>,
    ) -> Result<Response<DescribeIndexResponse>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let req = request.get_ref();
        let name = req.collection_name.trim();
        let Some(resolved) = self
            .engine
            .read(req.timestamp, |table, at| resolve_in(table, &db, name, at))
        else {
            return reply(DescribeIndexResponse {
                status: Some(MetaError::collection_not_found_in_db(&db, name).to_status()),
                index_descriptions: Vec::new(),
            });
        };
        let index_name = req.index_name.trim();
        let descriptions: Vec<IndexDescription> = resolved
            .collection
            .indexes
            .iter()
            .filter(|index| index_name.is_empty() || index.index_name == index_name)
            .map(|index| IndexDescription {
                index_name: index.index_name.clone(),
                index_id: index.id,
                params: index.params.clone(),
                field_name: index.field_name.clone(),
                state: IndexState::Finished as i32,
                ..Default::default()
            })
            .collect();
        if descriptions.is_empty() {
            let error = MetaError::new(
                code::INDEX_NOT_FOUND,
                format!("index not found[collection={name}]"),
            );
            return reply(DescribeIndexResponse {
                status: Some(error.to_status()),
                index_descriptions: Vec::new(),
            });
        }
        reply(DescribeIndexResponse {
            status: Some(success()),
            index_descriptions: descriptions,
        })
    }

    /// Metadata-only stub: forgets the recorded index.
    async fn drop_index(
        &self,
        request: Request<DropIndexRequest>,
    ) -> Result<Response<common::Status>, Status> {
        let db = database_of(&request, &request.get_ref().db_name);
        let req = request.get_ref();
        let ddl = validate_collection_name(&req.collection_name).map(|collection| Ddl::DropIndex {
            db,
            collection: collection.into(),
            field: req.field_name.trim().into(),
            index_name: req.index_name.trim().into(),
        });
        self.run_ddl(ddl).await
    }
}

/// ShowCollections on the meta table: the collections of `db` at the request's timestamp,
/// loaded ones only for `InMemory`, narrowed to `collection_names` (looked up in a set).
fn show_collections_blocking(
    engine: &Engine,
    db: &str,
    req: ShowCollectionsRequest,
) -> ShowCollectionsResponse {
    let in_memory = req.r#type == ShowType::InMemory as i32;
    let listed = engine.read(req.time_stamp, |table, at| {
        let db_record = table.database(db, at)?;
        let mut collections = table.collections_in(db_record.id, at);
        if in_memory {
            collections.retain(|c| table.is_loaded(c, at));
        }
        Some(collections)
    });
    let Some(mut collections) = listed else {
        return ShowCollectionsResponse {
            status: Some(MetaError::database_not_found(db).to_status()),
            ..Default::default()
        };
    };
    if !req.collection_names.is_empty() {
        let wanted: std::collections::HashSet<&str> =
            req.collection_names.iter().map(String::as_str).collect();
        collections.retain(|c| wanted.contains(c.name.as_str()));
    }
    ShowCollectionsResponse {
        status: Some(success()),
        collection_names: collections.iter().map(|c| c.name.clone()).collect(),
        collection_ids: collections.iter().map(|c| c.id).collect(),
        created_timestamps: collections.iter().map(|c| c.created_ts).collect(),
        created_utc_timestamps: collections
            .iter()
            .map(|c| physical_ms(c.created_ts))
            .collect(),
        in_memory_percentages: if in_memory {
            vec![100; collections.len()]
        } else {
            Vec::new()
        },
        query_service_available: if in_memory {
            vec![true; collections.len()]
        } else {
            Vec::new()
        },
        shards_num: Vec::new(),
    }
}
