//! The coordinator's answer to `grpc.health.v1.Health` on its own port: the Milvus
//! `CheckHealth` answer, so a coordinator whose store refuses writes is `NOT_SERVING`.

use std::sync::Arc;

use tonic::{Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::HealthServer;

use super::service::CoordinatorService;
use crate::proto::api::CheckHealthRequest;
use crate::proto::api::milvus_service_server::MilvusService;
use crate::serve::{HealthAnswer, HealthSource};

/// Service names this health service answers for: the whole server (`""`) and Milvus's.
pub const SERVICE_NAMES: [&str; 2] = ["", "milvus.proto.milvus.MilvusService"];

/// The coordinator's health, asked of its `CheckHealth`.
pub struct CoordinatorHealth {
    service: Arc<CoordinatorService>,
}

impl CoordinatorHealth {
    /// A health service asking `service`.
    pub fn new(service: Arc<CoordinatorService>) -> HealthServer<HealthAnswer<Self>> {
        HealthAnswer::server(Self { service })
    }
}

#[tonic::async_trait]
impl HealthSource for CoordinatorHealth {
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
