//! A client of a Milvus-compatible engine (our coordinator or a real Milvus), shaped for
//! reconciling: observe exactly the names a plan needs, apply one [`Action`] at a time.
//! Every request names its database in the `db_name` field (not only the header), so
//! DescribeAlias/ListAliases are scoped correctly on Milvus versions that ignore the header.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prost::Message;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::crd::{CollectionSpec, IndexSpec};
use crate::meta::error::code;
use crate::plan::serving::{
    IndexBuild, LoadState, ObservedIndex, ServingAction, ServingObservation,
};
use crate::plan::{Action, Observed, ObservedCollection};
use crate::proto::api::milvus_service_client::MilvusServiceClient;
use crate::proto::api::*;
use crate::proto::common::{KeyValuePair, Status};
use crate::proto::schema::{CollectionSchema, FieldSchema};

/// How long one RPC may take.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed engine call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The endpoint could not be reached or the RPC failed in transport.
    #[error("engine unreachable at {endpoint}: {message}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// The engine answered with an error status.
    #[error("{rpc} failed: code {code}: {message}")]
    Engine {
        /// The RPC.
        rpc: &'static str,
        /// Milvus integer code (`status.code`, or the legacy code if that is 0).
        code: i32,
        /// `status.reason`.
        message: String,
    },
}

impl ClientError {
    /// Errors that retrying will not fix (bad input, name clashes, missing targets); they
    /// are reported and not retried hot.
    pub fn is_terminal(&self) -> bool {
        // CreateCollection answers schema and name problems with plain 65535 errors, as
        // Milvus does: all of them are input errors.
        if let ClientError::Engine {
            rpc: "CreateCollection",
            code: code::UNEXPECTED,
            ..
        } = self
        {
            return true;
        }
        matches!(
            self,
            ClientError::Engine { code, .. } if matches!(
                *code,
                code::PARAMETER_INVALID
                    | code::ALIAS_COLLECTION_NAME_CONFLICT
                    | code::ALIAS_ALREADY_EXIST
                    | code::COLLECTION_NOT_FOUND
                    | code::DATABASE_NAME_INVALID
                    | 1700
            )
        )
    }

    /// The Milvus code, if the engine answered.
    pub fn code(&self) -> Option<i32> {
        match self {
            ClientError::Engine { code, .. } => Some(*code),
            ClientError::Unreachable { .. } => None,
        }
    }
}

/// Credentials sent as the `authorization` header (what pymilvus sends).
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// An API token.
    Token(String),
    /// User name and password.
    UserPassword(String, String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        match self {
            Credentials::Token(_) => f.write_str("Token(***)"),
            Credentials::UserPassword(user, _) => write!(f, "UserPassword({user}, ***)"),
        }
    }
}

/// A streaming node as the coordinator's placement reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedNode {
    /// Server ID (never reused: a restarted pod registers anew).
    pub server_id: i64,
    /// The address it registered with.
    pub address: String,
    /// Pchannels it holds, with their terms.
    pub pchannels: Vec<(String, i64)>,
}

/// The coordinator's WAL placement as [`EngineClient::wal_placement`] observes it: which
/// streaming node holds which pchannels, and which nodes are frozen (being drained).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalPlacement {
    /// Version of the assignment.
    pub version: i64,
    /// Registered nodes.
    pub nodes: Vec<PlacedNode>,
    /// Server IDs on the persisted freeze list.
    pub frozen: BTreeSet<i64>,
}

/// Outcome of applying one action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The engine ID of a created or adopted collection.
    pub collection_id: Option<i64>,
}

/// A connection to one engine.
#[derive(Clone)]
pub struct EngineClient {
    endpoint: String,
    channel: Channel,
    rpc: MilvusServiceClient<Channel>,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

/// An error with its sources ("transport error: …: invalid peer certificate: …"):
/// tonic's own text alone does not say why a TLS connection failed.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn check(rpc: &'static str, status: Option<Status>) -> Result<(), ClientError> {
    let status = status.unwrap_or_default();
    if status.code == 0 && status.error_code == 0 {
        return Ok(());
    }
    let code = if status.code != 0 {
        status.code
    } else {
        status.error_code
    };
    Err(ClientError::Engine {
        rpc,
        code,
        message: status.reason,
    })
}

fn kv(key: &str, value: impl ToString) -> KeyValuePair {
    KeyValuePair {
        key: key.to_string(),
        value: value.to_string(),
    }
}

/// The CreateCollection request for a `Collection` spec.
pub fn create_collection_request(
    database: &str,
    name: &str,
    spec: &CollectionSpec,
) -> CreateCollectionRequest {
    let fields = spec
        .fields
        .iter()
        .map(|field| {
            let mut type_params = Vec::new();
            if let Some(dim) = field.dim {
                type_params.push(kv("dim", dim));
            }
            if let Some(max_length) = field.max_length {
                type_params.push(kv("max_length", max_length));
            }
            if let Some(max_capacity) = field.max_capacity {
                type_params.push(kv("max_capacity", max_capacity));
            }
            FieldSchema {
                name: field.name.clone(),
                description: field.description.clone().unwrap_or_default(),
                data_type: field.data_type.to_proto() as i32,
                is_primary_key: field.is_primary_key,
                auto_id: field.auto_id,
                type_params,
                element_type: field
                    .element_type
                    .map(|t| t.to_proto() as i32)
                    .unwrap_or_default(),
                nullable: field.nullable,
                is_partition_key: field.is_partition_key,
                ..Default::default()
            }
        })
        .collect();
    let schema = CollectionSchema {
        name: name.to_string(),
        description: spec.description.clone().unwrap_or_default(),
        fields,
        enable_dynamic_field: spec.enable_dynamic_field,
        ..Default::default()
    };
    CreateCollectionRequest {
        db_name: database.to_string(),
        collection_name: name.to_string(),
        schema: schema.encode_to_vec(),
        shards_num: spec.shards_num.unwrap_or(0),
        consistency_level: spec.consistency_level.unwrap_or_default().to_proto() as i32,
        properties: spec
            .properties
            .iter()
            .flatten()
            .map(|(key, value)| kv(key, value))
            .collect(),
        ..Default::default()
    }
}

impl EngineClient {
    /// Connects to `endpoint` (`http://host:port`, or `https://host:port` for TLS) and
    /// sends `Connect`, as SDKs do. `https://` verifies the server certificate against
    /// the system roots; to trust a private CA, point `SSL_CERT_FILE` (or `SSL_CERT_DIR`)
    /// at it, which replaces the system roots.
    pub async fn connect(
        endpoint: &str,
        credentials: Option<&Credentials>,
    ) -> Result<Self, ClientError> {
        let unreachable = |message: String| ClientError::Unreachable {
            endpoint: endpoint.to_string(),
            message,
        };
        let mut target =
            Endpoint::from_shared(endpoint.to_string()).map_err(|e| unreachable(e.to_string()))?;
        if target.uri().scheme_str() == Some("https") {
            target = target
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(|e| unreachable(format!("TLS set-up: {}", error_chain(&e))))?;
        }
        let channel = target
            .connect_timeout(RPC_TIMEOUT)
            .timeout(RPC_TIMEOUT)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        let authorization = match credentials {
            None => None,
            Some(credentials) => {
                use base64::Engine as _;
                let raw = match credentials {
                    Credentials::Token(token) => token.clone(),
                    Credentials::UserPassword(user, password) => format!("{user}:{password}"),
                };
                let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                Some(
                    encoded
                        .parse()
                        .map_err(|_| unreachable("credentials are not valid header text".into()))?,
                )
            }
        };
        let mut client = Self {
            endpoint: endpoint.to_string(),
            channel: channel.clone(),
            rpc: MilvusServiceClient::new(channel)
                .max_decoding_message_size(crate::serve::MAX_MESSAGE_BYTES),
            authorization,
        };
        let response = client
            .rpc
            .connect(client.request(ConnectRequest::default()))
            .await;
        let response = response.map_err(|s| client.transport(s))?.into_inner();
        check("Connect", response.status)?;
        Ok(client)
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        request
    }

    fn transport(&self, status: tonic::Status) -> ClientError {
        ClientError::Unreachable {
            endpoint: self.endpoint.clone(),
            message: status.to_string(),
        }
    }

    /// The coordinator's WAL placement: the full assignment `AssignmentDiscover` pushes
    /// first (every node, also those holding nothing), and the persisted freeze list
    /// (`UpdateWALBalancePolicy` without changes answers it). Only our coordinator serves
    /// these (managed Coordinators); a refusal comes back as its gRPC status.
    pub async fn wal_placement(&mut self) -> Result<WalPlacement, ClientError> {
        use crate::proto::streaming::AssignmentDiscoverRequest;
        use crate::proto::streaming::UpdateWalBalancePolicyRequest;
        use crate::proto::streaming::assignment_discover_response::Response as Discovered;
        use crate::proto::streaming::streaming_coord_assignment_service_client::StreamingCoordAssignmentServiceClient;
        let mut client = StreamingCoordAssignmentServiceClient::new(self.channel.clone());
        let frozen = client
            .update_wal_balance_policy(self.request(UpdateWalBalancePolicyRequest::default()))
            .await
            .map_err(|s| self.streaming_error("UpdateWALBalancePolicy", s))?
            .into_inner()
            .freeze_node_ids;
        // The request stream stays open (and empty) until the first response is read.
        let (requests, inbound) = tokio::sync::mpsc::channel::<AssignmentDiscoverRequest>(1);
        let mut responses = client
            .assignment_discover(self.request(tokio_stream::wrappers::ReceiverStream::new(inbound)))
            .await
            .map_err(|s| self.streaming_error("AssignmentDiscover", s))?
            .into_inner();
        let first = tokio::time::timeout(RPC_TIMEOUT, responses.message())
            .await
            .map_err(|_| ClientError::Unreachable {
                endpoint: self.endpoint.clone(),
                message: "AssignmentDiscover sent no assignment in time".into(),
            })?
            .map_err(|s| self.streaming_error("AssignmentDiscover", s))?;
        drop(requests);
        let Some(Discovered::FullAssignment(full)) = first.and_then(|r| r.response) else {
            return Err(ClientError::Unreachable {
                endpoint: self.endpoint.clone(),
                message: "AssignmentDiscover closed without an assignment".into(),
            });
        };
        let nodes = full
            .assignments
            .iter()
            .filter_map(|assignment| {
                let node = assignment.node.as_ref()?;
                Some(PlacedNode {
                    server_id: node.server_id,
                    address: node.address.clone(),
                    pchannels: assignment
                        .channels
                        .iter()
                        .map(|c| (c.name.clone(), c.term))
                        .collect(),
                })
            })
            .collect();
        Ok(WalPlacement {
            version: full.version.map_or(0, |v| v.local),
            nodes,
            frozen: frozen.into_iter().collect(),
        })
    }

    /// Adds `freeze` to and removes `defreeze` from the coordinator's persisted freeze
    /// list (frozen streaming nodes get no pchannel and are drained).
    pub async fn update_wal_freeze(
        &mut self,
        freeze: &[i64],
        defreeze: &[i64],
    ) -> Result<(), ClientError> {
        use crate::proto::streaming::streaming_coord_assignment_service_client::StreamingCoordAssignmentServiceClient;
        use crate::proto::streaming::{UpdateWalBalancePolicyRequest, WalBalancePolicyNodes};
        let mut client = StreamingCoordAssignmentServiceClient::new(self.channel.clone());
        client
            .update_wal_balance_policy(self.request(UpdateWalBalancePolicyRequest {
                nodes: Some(WalBalancePolicyNodes {
                    freeze_node_ids: freeze.to_vec(),
                    defreeze_node_ids: defreeze.to_vec(),
                }),
                ..Default::default()
            }))
            .await
            .map_err(|s| self.streaming_error("UpdateWALBalancePolicy", s))?;
        Ok(())
    }

    /// A streaming RPC's refusal: transport-level, so that the connection is renewed.
    fn streaming_error(&self, rpc: &str, status: tonic::Status) -> ClientError {
        ClientError::Unreachable {
            endpoint: self.endpoint.clone(),
            message: format!("{rpc}: {status}"),
        }
    }

    /// What the engine reports as its version.
    pub async fn server_version(&mut self) -> Result<String, ClientError> {
        let request = self.request(GetVersionRequest {});
        let response = self
            .rpc
            .get_version(request)
            .await
            .map_err(|s| self.transport(s))?
            .into_inner();
        check("GetVersion", response.status)?;
        Ok(response.version)
    }

    /// Every database.
    pub async fn databases(&mut self) -> Result<BTreeSet<String>, ClientError> {
        let request = self.request(ListDatabasesRequest::default());
        let response = self
            .rpc
            .list_databases(request)
            .await
            .map_err(|s| self.transport(s))?
            .into_inner();
        check("ListDatabases", response.status)?;
        Ok(response.db_names.into_iter().collect())
    }

    /// Every collection of `database` with its ID (ShowCollections), or `None` if the
    /// database does not exist. One call, whatever the number of names a pass involves.
    pub async fn collection_ids(
        &mut self,
        database: &str,
    ) -> Result<Option<BTreeMap<String, i64>>, ClientError> {
        let request = self.request(ShowCollectionsRequest {
            db_name: database.to_string(),
            ..Default::default()
        });
        let response = self
            .rpc
            .show_collections(request)
            .await
            .map_err(|s| self.transport(s))?
            .into_inner();
        match check("ShowCollections", response.status) {
            Ok(()) => Ok(Some(
                response
                    .collection_names
                    .into_iter()
                    .zip(response.collection_ids)
                    .collect(),
            )),
            Err(ClientError::Engine { code, .. }) if code == code::DATABASE_NOT_FOUND => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The alias names of `database` (ListAliases), or of one collection of it when
    /// `collection` is given; `None` if the database (or that collection) does not exist.
    /// Milvus answers names only, no targets. Milvus 2.3.5 does not implement it
    /// (`internal/proxy/impl.go`, `Proxy.ListAliases` answers ServiceUnavailable): that
    /// comes back as an [`ClientError::Engine`], and callers observe name by name instead.
    pub async fn alias_names(
        &mut self,
        database: &str,
        collection: Option<&str>,
    ) -> Result<Option<Vec<String>>, ClientError> {
        let request = self.request(ListAliasesRequest {
            db_name: database.to_string(),
            collection_name: collection.unwrap_or_default().to_string(),
            ..Default::default()
        });
        let response = self
            .rpc
            .list_aliases(request)
            .await
            .map_err(|s| self.transport(s))?
            .into_inner();
        match check("ListAliases", response.status) {
            Ok(()) => Ok(Some(response.aliases)),
            Err(ClientError::Engine { code, .. })
                if code == code::DATABASE_NOT_FOUND || code == code::COLLECTION_NOT_FOUND =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// One collection (by its real name; an alias name is not resolved), or `None`.
    pub async fn collection(
        &mut self,
        database: &str,
        name: &str,
    ) -> Result<Option<ObservedCollection>, ClientError> {
        let Some(response) = self.describe_collection(database, name).await? else {
            return Ok(None);
        };
        // DescribeCollection resolves aliases; only the real name counts here.
        let real_name = response
            .schema
            .as_ref()
            .map(|s| s.name.as_str())
            .unwrap_or_default();
        if real_name != name {
            return Ok(None);
        }
        Ok(Some(ObservedCollection {
            id: response.collection_id,
            aliases: response.aliases.into_iter().collect(),
        }))
    }

    /// DescribeCollection (which resolves aliases), or `None` for a missing collection
    /// or database.
    async fn describe_collection(
        &mut self,
        database: &str,
        name: &str,
    ) -> Result<Option<DescribeCollectionResponse>, ClientError> {
        let request = self.request(DescribeCollectionRequest {
            db_name: database.to_string(),
            collection_name: name.to_string(),
            ..Default::default()
        });
        let response = self
            .rpc
            .describe_collection(request)
            .await
            .map_err(|s| self.transport(s))?
            .into_inner();
        match check("DescribeCollection", response.status.clone()) {
            Ok(()) => Ok(Some(response)),
            Err(ClientError::Engine { code, .. })
                if code == code::COLLECTION_NOT_FOUND
                    || code == code::DATABASE_NOT_FOUND
                    || code == 4 =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// The target of one alias, or `None`.
    pub async fn alias_target(
        &mut self,
        database: &str,
        alias: &str,
    ) -> Result<Option<String>, ClientError> {
        let request = self.request(DescribeAliasRequest {
            db_name: database.to_string(),
            alias: alias.to_string(),
            ..Default::default()
        });
        let response = self
            .rpc
            .describe_alias(request)
            .await
            .map_err(|s| self.transport(s))?
            .into_inner();
        match check("DescribeAlias", response.status) {
            Ok(()) => Ok(Some(response.collection)),
            Err(ClientError::Engine { code, .. })
                if code == code::ALIAS_NOT_FOUND || code == code::DATABASE_NOT_FOUND =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Observes exactly the databases, collections and aliases named.
    pub async fn observe(
        &mut self,
        collections: &BTreeSet<(String, String)>,
        aliases: &BTreeSet<(String, String)>,
    ) -> Result<Observed, ClientError> {
        let mut observed = Observed {
            databases: self.databases().await?,
            ..Default::default()
        };
        for (database, name) in collections {
            if !observed.databases.contains(database) {
                continue;
            }
            if let Some(collection) = self.collection(database, name).await? {
                observed
                    .collections
                    .insert((database.clone(), name.clone()), collection);
            }
        }
        for (database, alias) in aliases {
            if !observed.databases.contains(database) {
                continue;
            }
            if let Some(target) = self.alias_target(database, alias).await? {
                observed
                    .aliases
                    .insert((database.clone(), alias.clone()), target);
            }
        }
        Ok(observed)
    }

    /// Applies one action. Adopt actions make no RPC (the collection ID is looked up).
    pub async fn apply(&mut self, action: &Action) -> Result<Applied, ClientError> {
        match action {
            Action::CreateDatabase { database } => {
                let request = self.request(CreateDatabaseRequest {
                    db_name: database.clone(),
                    ..Default::default()
                });
                let status = self
                    .rpc
                    .create_database(request)
                    .await
                    .map_err(|s| self.transport(s))?
                    .into_inner();
                match check("CreateDatabase", Some(status)) {
                    // Created concurrently by someone else: what we wanted.
                    Err(ClientError::Engine { message, .. })
                        if message.starts_with("database already exist") => {}
                    other => other?,
                }
                Ok(Applied::default())
            }
            Action::CreateCollection {
                database,
                name,
                spec,
                ..
            } => {
                let request = self.request(create_collection_request(database, name, spec));
                let status = self
                    .rpc
                    .create_collection(request)
                    .await
                    .map_err(|s| self.transport(s))?
                    .into_inner();
                check("CreateCollection", Some(status))?;
                let id = self.collection(database, name).await?.map(|c| c.id);
                Ok(Applied { collection_id: id })
            }
            Action::AdoptCollection { id, .. } => Ok(Applied {
                collection_id: Some(*id),
            }),
            Action::CreateAlias {
                database,
                alias,
                target,
                ..
            } => {
                let request = self.request(CreateAliasRequest {
                    db_name: database.clone(),
                    collection_name: target.clone(),
                    alias: alias.clone(),
                    ..Default::default()
                });
                let status = self
                    .rpc
                    .create_alias(request)
                    .await
                    .map_err(|s| self.transport(s))?
                    .into_inner();
                check("CreateAlias", Some(status))?;
                Ok(Applied::default())
            }
            Action::AlterAlias {
                database,
                alias,
                to,
                ..
            } => {
                let request = self.request(AlterAliasRequest {
                    db_name: database.clone(),
                    collection_name: to.clone(),
                    alias: alias.clone(),
                    ..Default::default()
                });
                let status = self
                    .rpc
                    .alter_alias(request)
                    .await
                    .map_err(|s| self.transport(s))?
                    .into_inner();
                check("AlterAlias", Some(status))?;
                Ok(Applied::default())
            }
            Action::AdoptAlias { .. } => Ok(Applied::default()),
            Action::DropAlias {
                database, alias, ..
            } => {
                let request = self.request(DropAliasRequest {
                    db_name: database.clone(),
                    alias: alias.clone(),
                    ..Default::default()
                });
                let status = self
                    .rpc
                    .drop_alias(request)
                    .await
                    .map_err(|s| self.transport(s))?
                    .into_inner();
                check("DropAlias", Some(status))?;
                Ok(Applied::default())
            }
            Action::DropCollection { database, name, .. } => {
                let request = self.request(DropCollectionRequest {
                    db_name: database.clone(),
                    collection_name: name.clone(),
                    ..Default::default()
                });
                let status = self
                    .rpc
                    .drop_collection(request)
                    .await
                    .map_err(|s| self.transport(s))?
                    .into_inner();
                check("DropCollection", Some(status))?;
                Ok(Applied::default())
            }
        }
    }
}

/// Serving: indexes, load state and row counts, for the serving gate and the Collection
/// controller's `spec.indexes` / `spec.load`.
impl EngineClient {
    /// CreateIndex as declared, always with an explicit index name (see
    /// [`IndexSpec::engine_name`]). `extra_params` carries `index_type`, `metric_type` and
    /// the build parameters as one JSON object under `params`, as pymilvus sends them.
    pub async fn create_index(
        &mut self,
        database: &str,
        collection: &str,
        index: &IndexSpec,
    ) -> Result<(), ClientError> {
        let mut extra_params = vec![kv("index_type", &index.index_type)];
        if let Some(metric) = &index.metric_type {
            extra_params.push(kv("metric_type", metric));
        }
        if !index.params.is_empty() {
            let params = serde_json::to_string(&index.params).unwrap_or_default();
            extra_params.push(kv("params", params));
        }
        let request = self.request(CreateIndexRequest {
            db_name: database.to_string(),
            collection_name: collection.to_string(),
            field_name: index.field_name.clone(),
            index_name: index.engine_name().to_string(),
            extra_params,
            ..Default::default()
        });
        let status = self
            .rpc
            .create_index(request)
            .await
            .map_err(|s| self.transport(s))?
            .into_inner();
        check("CreateIndex", Some(status))
    }

    /// Every index of a collection (DescribeIndex without a name); none is an empty list.
    pub async fn indexes(
        &mut self,
        database: &str,
        collection: &str,
    ) -> Result<Vec<ObservedIndex>, ClientError> {
        let request = self.request(DescribeIndexRequest {
            db_name: database.to_string(),
            collection_name: collection.to_string(),
            ..Default::default()
        });
        let response = self
            .rpc
            .describe_index(request)
            .await
            .map_err(|s| self.transport(s))?
            .into_inner();
        match check("DescribeIndex", response.status) {
            Ok(()) => {}
            // 700 (`IndexNotFound`), or the legacy `IndexNotExist` (25) alone.
            Err(ClientError::Engine { code, .. })
                if code == code::INDEX_NOT_FOUND || code == 25 =>
            {
                return Ok(Vec::new());
            }
            Err(error) => return Err(error),
        }
        Ok(response
            .index_descriptions
            .into_iter()
            .map(|index| ObservedIndex {
                state: index_build(index.state),
                name: index.index_name,
                field: index.field_name,
                indexed_rows: index.indexed_rows,
                total_rows: index.total_rows,
                pending_rows: index.pending_index_rows,
                fail_reason: index.index_state_fail_reason,
            })
            .collect())
    }

    /// LoadCollection; `replicas` `None` leaves the engine's default (1).
    pub async fn load_collection(
        &mut self,
        database: &str,
        collection: &str,
        replicas: Option<i32>,
        resource_groups: &[String],
    ) -> Result<(), ClientError> {
        let request = self.request(LoadCollectionRequest {
            db_name: database.to_string(),
            collection_name: collection.to_string(),
            replica_number: replicas.unwrap_or(0),
            resource_groups: resource_groups.to_vec(),
            ..Default::default()
        });
        let status = self
            .rpc
            .load_collection(request)
            .await
            .map_err(|s| self.transport(s))?
            .into_inner();
        check("LoadCollection", Some(status))
    }

    /// ReleaseCollection.
    pub async fn release_collection(
        &mut self,
        database: &str,
        collection: &str,
    ) -> Result<(), ClientError> {
        let request = self.request(ReleaseCollectionRequest {
            db_name: database.to_string(),
            collection_name: collection.to_string(),
            ..Default::default()
        });
        let status = self
            .rpc
            .release_collection(request)
            .await
            .map_err(|s| self.transport(s))?
            .into_inner();
        check("ReleaseCollection", Some(status))
    }

    /// GetLoadState.
    pub async fn load_state(
        &mut self,
        database: &str,
        collection: &str,
    ) -> Result<LoadState, ClientError> {
        let request = self.request(GetLoadStateRequest {
            db_name: database.to_string(),
            collection_name: collection.to_string(),
            ..Default::default()
        });
        let response = self
            .rpc
            .get_load_state(request)
            .await
            .map_err(|s| self.transport(s))?
            .into_inner();
        check("GetLoadState", response.status)?;
        use crate::proto::common::LoadState as Proto;
        Ok(match Proto::try_from(response.state) {
            Ok(Proto::Loaded) => LoadState::Loaded,
            Ok(Proto::Loading) => LoadState::Loading,
            Ok(Proto::NotExist) => LoadState::NotExist,
            _ => LoadState::NotLoad,
        })
    }

    /// GetLoadingProgress in percent.
    pub async fn loading_progress(
        &mut self,
        database: &str,
        collection: &str,
    ) -> Result<i64, ClientError> {
        let request = self.request(GetLoadingProgressRequest {
            db_name: database.to_string(),
            collection_name: collection.to_string(),
            ..Default::default()
        });
        let response = self
            .rpc
            .get_loading_progress(request)
            .await
            .map_err(|s| self.transport(s))?
            .into_inner();
        check("GetLoadingProgress", response.status)?;
        Ok(response.progress)
    }

    /// GetCollectionStatistics `row_count` (0 when the engine leaves it out).
    pub async fn row_count(
        &mut self,
        database: &str,
        collection: &str,
    ) -> Result<i64, ClientError> {
        let request = self.request(GetCollectionStatisticsRequest {
            db_name: database.to_string(),
            collection_name: collection.to_string(),
            ..Default::default()
        });
        let response = self
            .rpc
            .get_collection_statistics(request)
            .await
            .map_err(|s| self.transport(s))?
            .into_inner();
        check("GetCollectionStatistics", response.status)?;
        let Some(rows) = response.stats.iter().find(|kv| kv.key == "row_count") else {
            return Ok(0);
        };
        rows.value.parse().map_err(|_| ClientError::Engine {
            rpc: "GetCollectionStatistics",
            code: code::UNEXPECTED,
            message: format!("row_count is not an integer: {:?}", rows.value),
        })
    }

    /// One round of serving reads for a collection: DescribeIndex, GetLoadState,
    /// GetLoadingProgress (only while loading) and GetCollectionStatistics.
    pub async fn serving(
        &mut self,
        database: &str,
        collection: &str,
    ) -> Result<ServingObservation, ClientError> {
        let indexes = self.indexes(database, collection).await?;
        let load = self.load_state(database, collection).await?;
        let load_progress = match load {
            LoadState::Loading => self.loading_progress(database, collection).await?,
            LoadState::Loaded => 100,
            LoadState::NotLoad | LoadState::NotExist => 0,
        };
        let row_count = self.row_count(database, collection).await?;
        Ok(ServingObservation {
            indexes,
            load,
            load_progress,
            row_count,
        })
    }

    /// The collection a name leads to, resolving aliases: its real name and ID
    /// (DescribeCollection), or `None`. After AlterAlias this confirms the alias really
    /// serves the new target.
    pub async fn resolve(
        &mut self,
        database: &str,
        name_or_alias: &str,
    ) -> Result<Option<(String, i64)>, ClientError> {
        Ok(self
            .describe_collection(database, name_or_alias)
            .await?
            .map(|response| {
                (
                    response.schema.map(|s| s.name).unwrap_or_default(),
                    response.collection_id,
                )
            }))
    }

    /// Applies one serving action to a collection.
    pub async fn apply_serving(
        &mut self,
        database: &str,
        collection: &str,
        action: &ServingAction,
    ) -> Result<(), ClientError> {
        match action {
            ServingAction::CreateIndex(index) => {
                self.create_index(database, collection, index).await
            }
            ServingAction::LoadCollection {
                replicas,
                resource_groups,
            } => {
                self.load_collection(database, collection, *replicas, resource_groups)
                    .await
            }
            ServingAction::ReleaseCollection => self.release_collection(database, collection).await,
        }
    }
}

fn index_build(state: i32) -> IndexBuild {
    use crate::proto::common::IndexState as Proto;
    match Proto::try_from(state) {
        Ok(Proto::Unissued) => IndexBuild::Unissued,
        Ok(Proto::InProgress) => IndexBuild::InProgress,
        Ok(Proto::Finished) => IndexBuild::Finished,
        Ok(Proto::Failed) => IndexBuild::Failed,
        Ok(Proto::Retry) => IndexBuild::Retry,
        Ok(Proto::None) | Err(_) => IndexBuild::None,
    }
}
