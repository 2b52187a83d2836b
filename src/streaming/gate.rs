//! The streaming coordinator's services behind a switch. Only one process may place
//! pchannels: with several coordinator replicas on etcd, the elected leader starts a
//! [`StreamingCoord`] when it takes over and stops it when it steps down (see
//! [`crate::coordinator::ha`]); followers answer these RPCs `UNAVAILABLE` with a message
//! naming the leader. A streaming node opens a new connection for every registration
//! attempt, so behind a Service it reaches the leader after a few tries.

use std::sync::Arc;

use parking_lot::RwLock;
use tonic::{Request, Response, Status, Streaming};

use super::coord::StreamingCoord;
use crate::proto::session::streaming_node_session_service_server::{
    StreamingNodeSessionService, StreamingNodeSessionServiceServer,
};
use crate::proto::session::{
    DeregisterRequest, DeregisterResponse, KeepAliveRequest, KeepAliveResponse, RegisterRequest,
    RegisterResponse,
};
use crate::proto::streaming::streaming_coord_assignment_service_server::{
    StreamingCoordAssignmentService, StreamingCoordAssignmentServiceServer,
};
use crate::proto::streaming::{
    AssignmentDiscoverRequest, UpdateWalBalancePolicyRequest, UpdateWalBalancePolicyResponse,
};

/// The running streaming coordinator, if this process places pchannels now.
#[derive(Clone)]
pub struct StreamingGate {
    current: Arc<RwLock<Option<StreamingCoord>>>,
    refusal: Arc<RwLock<String>>,
}

impl StreamingGate {
    /// A gate that serves `coord` (a single coordinator process).
    pub fn open(coord: StreamingCoord) -> Self {
        let gate = Self::closed("the streaming coordinator is not running");
        gate.set(Some(coord));
        gate
    }

    /// A gate that refuses with `refusal` until a coordinator is set.
    pub fn closed(refusal: &str) -> Self {
        Self {
            current: Arc::new(RwLock::new(None)),
            refusal: Arc::new(RwLock::new(refusal.to_string())),
        }
    }

    /// Serves `coord` from now on (or nobody); returns the one served before.
    pub fn set(&self, coord: Option<StreamingCoord>) -> Option<StreamingCoord> {
        std::mem::replace(&mut *self.current.write(), coord)
    }

    /// What RPCs are refused with while no coordinator is set.
    pub fn set_refusal(&self, refusal: &str) {
        *self.refusal.write() = refusal.to_string();
    }

    /// The current assignment, while a streaming coordinator is set (the DDL log finds
    /// the control channel's holder here).
    pub fn assignment(
        &self,
    ) -> Option<Arc<crate::proto::streaming::FullStreamingNodeAssignmentWithVersion>> {
        self.current.read().as_ref().map(StreamingCoord::assignment)
    }

    /// The coordinator to serve from, or the refusal.
    fn get(&self) -> Result<StreamingCoord, Status> {
        self.current
            .read()
            .clone()
            .ok_or_else(|| Status::unavailable(self.refusal.read().clone()))
    }

    /// The tonic services to serve beside MilvusService.
    pub fn services(
        &self,
    ) -> (
        StreamingCoordAssignmentServiceServer<Self>,
        StreamingNodeSessionServiceServer<Self>,
    ) {
        (
            StreamingCoordAssignmentServiceServer::new(self.clone()),
            StreamingNodeSessionServiceServer::new(self.clone()),
        )
    }
}

#[tonic::async_trait]
impl StreamingNodeSessionService for StreamingGate {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        StreamingNodeSessionService::register(&self.get()?, request).await
    }

    async fn keep_alive(
        &self,
        request: Request<KeepAliveRequest>,
    ) -> Result<Response<KeepAliveResponse>, Status> {
        StreamingNodeSessionService::keep_alive(&self.get()?, request).await
    }

    async fn deregister(
        &self,
        request: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterResponse>, Status> {
        StreamingNodeSessionService::deregister(&self.get()?, request).await
    }
}

#[tonic::async_trait]
impl StreamingCoordAssignmentService for StreamingGate {
    type AssignmentDiscoverStream =
        <StreamingCoord as StreamingCoordAssignmentService>::AssignmentDiscoverStream;

    async fn update_wal_balance_policy(
        &self,
        request: Request<UpdateWalBalancePolicyRequest>,
    ) -> Result<Response<UpdateWalBalancePolicyResponse>, Status> {
        StreamingCoordAssignmentService::update_wal_balance_policy(&self.get()?, request).await
    }

    async fn assignment_discover(
        &self,
        request: Request<Streaming<AssignmentDiscoverRequest>>,
    ) -> Result<Response<Self::AssignmentDiscoverStream>, Status> {
        StreamingCoordAssignmentService::assignment_discover(&self.get()?, request).await
    }
}
