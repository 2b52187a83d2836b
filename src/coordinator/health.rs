//! The standard gRPC health service (`grpc.health.v1.Health`) on the coordinator port, so
//! that Kubernetes `grpc:` probes (and any load balancer) ask the coordinator itself
//! whether it serves. Its answer is the Milvus `CheckHealth` answer: a coordinator whose
//! store refuses writes is `NOT_SERVING`, not merely a port that accepts connections.
//!
//! It is outside the authentication check: a probe carries no credentials, and the
//! answer is one of two words.

use std::pin::Pin;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::service::CoordinatorService;
use crate::proto::api::CheckHealthRequest;
use crate::proto::api::milvus_service_server::MilvusService;

/// Service names this health service answers for: the whole server (`""`) and Milvus's.
pub const SERVICE_NAMES: [&str; 2] = ["", "milvus.proto.milvus.MilvusService"];

/// `grpc.health.v1.Health` answering from the coordinator's `CheckHealth`.
pub struct CoordinatorHealth {
    service: Arc<CoordinatorService>,
}

impl CoordinatorHealth {
    /// A health service asking `service`.
    pub fn new(service: Arc<CoordinatorService>) -> HealthServer<Self> {
        HealthServer::new(Self { service })
    }

    async fn status(&self, service: &str) -> Result<ServingStatus, Status> {
        if !SERVICE_NAMES.contains(&service) {
            return Err(Status::not_found(format!("unknown service {service:?}")));
        }
        let answer = self
            .service
            .check_health(Request::new(CheckHealthRequest::default()))
            .await?
            .into_inner();
        Ok(if answer.is_healthy {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
    }
}

type WatchStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for CoordinatorHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let status = self.status(&request.into_inner().service).await?;
        Ok(Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }

    type WatchStream = WatchStream;

    /// The current status once (probes use `Check`; a stream of changes would need a
    /// notification from the store that does not exist).
    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let status = self.status(&request.into_inner().service).await?;
        let once = tokio_stream::once(Ok(HealthCheckResponse {
            status: status as i32,
        }));
        Ok(Response::new(Box::pin(once)))
    }
}
