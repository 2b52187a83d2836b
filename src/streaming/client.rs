//! Client side of the streaming services: following the assignment, producing to and
//! consuming from a pchannel. Used by the tests and the benchmark, and the piece the
//! coordinator's DDL path (appending to the control channel, `coordinator::ddl_wal`) builds on.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::node::encode_channel_metadata;
use super::{CREATE_CONSUMER_KEY, CREATE_PRODUCER_KEY, StreamingFailure};
use crate::auth::Credential;
use crate::proto::common::ImmutableMessage;
use crate::proto::messages::Message;
use crate::proto::streaming::streaming_coord_assignment_service_client::StreamingCoordAssignmentServiceClient;
use crate::proto::streaming::streaming_node_handler_service_client::StreamingNodeHandlerServiceClient;
use crate::proto::streaming::*;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a streaming error (fenced, wrong term, ...).
    #[error("streaming error: {0}")]
    Streaming(StreamingFailure),
    /// Transport or other gRPC failure.
    #[error("rpc: {0}")]
    Rpc(tonic::Status),
    /// Could not connect.
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The stream ended.
    #[error("stream ended")]
    Ended,
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        match StreamingFailure::from_status(&status) {
            Some(failure) => Self::Streaming(failure),
            None => Self::Rpc(status),
        }
    }
}

impl ClientError {
    /// The streaming error code, if the server sent one.
    pub fn code(&self) -> Option<StreamingCode> {
        match self {
            Self::Streaming(failure) => Some(failure.code),
            _ => None,
        }
    }
}

/// Connects a channel to `host:port` (or `unix:PATH`).
pub async fn connect(address: &str) -> Result<Channel, ClientError> {
    Ok(crate::serve::connect(address, Duration::from_secs(2)).await?)
}

/// Where a pchannel is: its term and the address of its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The channel at its current term.
    pub channel: PChannelInfo,
    /// Holder's server ID.
    pub server_id: i64,
    /// Holder's address.
    pub address: String,
}

/// The assignment as last pushed by AssignmentDiscover.
#[derive(Debug, Clone, Default)]
pub struct AssignmentView {
    /// `(global, local)` version.
    pub version: (i64, i64),
    /// Assigned pchannels by name.
    pub channels: HashMap<String, Placement>,
    /// Channels per node (every registered node, also when empty).
    pub nodes: HashMap<i64, Vec<String>>,
    /// The control channel's pchannel.
    pub cchannel: String,
}

impl AssignmentView {
    /// The view of a full assignment.
    pub fn from_full(full: &FullStreamingNodeAssignmentWithVersion) -> Self {
        let mut view = Self {
            version: full
                .version
                .map(|v| (v.global, v.local))
                .unwrap_or_default(),
            cchannel: full
                .cchannel
                .as_ref()
                .and_then(|c| c.meta.as_ref())
                .map(|m| m.pchannel.clone())
                .unwrap_or_default(),
            ..Self::default()
        };
        for assignment in &full.assignments {
            let Some(node) = &assignment.node else {
                continue;
            };
            let names = view.nodes.entry(node.server_id).or_default();
            for channel in &assignment.channels {
                names.push(channel.name.clone());
                view.channels.insert(
                    channel.name.clone(),
                    Placement {
                        channel: channel.clone(),
                        server_id: node.server_id,
                        address: node.address.clone(),
                    },
                );
            }
        }
        view
    }
}

/// A live AssignmentDiscover subscription.
pub struct Discovery {
    view: watch::Receiver<AssignmentView>,
    commands: mpsc::Sender<AssignmentDiscoverRequest>,
}

impl Discovery {
    /// Subscribes at the coordinator `address`.
    pub async fn start(address: &str) -> Result<Self, ClientError> {
        Self::start_as(address, None).await
    }

    /// [`Self::start`] presenting `credential`.
    pub async fn start_as(
        address: &str,
        credential: Option<&Credential>,
    ) -> Result<Self, ClientError> {
        let mut client = StreamingCoordAssignmentServiceClient::new(connect(address).await?);
        let (commands, outgoing) = mpsc::channel(16);
        let mut request = tonic::Request::new(ReceiverStream::new(outgoing));
        if let Some(credential) = credential {
            credential.attach(request.metadata_mut());
        }
        let mut inbound = client.assignment_discover(request).await?.into_inner();
        let (sender, view) = watch::channel(AssignmentView::default());
        tokio::spawn(async move {
            while let Some(Ok(response)) = inbound.next().await {
                if let Some(assignment_discover_response::Response::FullAssignment(full)) =
                    response.response
                {
                    sender.send_replace(AssignmentView::from_full(&full));
                }
            }
        });
        Ok(Self { view, commands })
    }

    /// The latest view.
    pub fn current(&self) -> AssignmentView {
        self.view.borrow().clone()
    }

    /// Waits (up to `limit`) for a view that satisfies `ready`.
    pub async fn wait_for(
        &mut self,
        limit: Duration,
        mut ready: impl FnMut(&AssignmentView) -> bool,
    ) -> Option<AssignmentView> {
        let wait = async {
            loop {
                {
                    let view = self.view.borrow_and_update();
                    if ready(&view) {
                        return Some(view.clone());
                    }
                }
                if self.view.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(limit, wait).await.ok().flatten()
    }

    /// Tells the coordinator that `channel` failed at its term.
    pub async fn report_error(&self, channel: PChannelInfo, error: StreamingFailure) {
        let _ = self
            .commands
            .send(AssignmentDiscoverRequest {
                command: Some(assignment_discover_request::Command::ReportError(
                    ReportAssignmentErrorRequest {
                        pchannel: Some(channel),
                        err: Some(error.to_proto()),
                    },
                )),
            })
            .await;
    }
}

/// An open Produce stream to one pchannel at one term.
pub struct Producer {
    requests: mpsc::Sender<ProduceRequest>,
    responses: tonic::Streaming<ProduceResponse>,
    next_request: i64,
}

/// A produced record's outcome.
pub type ProduceOutcome = Result<ProduceMessageResponseResult, ClientError>;

impl Producer {
    /// Opens a producer on the holder at `address`.
    pub async fn open(address: &str, channel: PChannelInfo) -> Result<Self, ClientError> {
        Self::open_as(address, channel, None).await
    }

    /// [`Self::open`] presenting `credential`.
    pub async fn open_as(
        address: &str,
        channel: PChannelInfo,
        credential: Option<&Credential>,
    ) -> Result<Self, ClientError> {
        let mut client = StreamingNodeHandlerServiceClient::new(connect(address).await?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let (requests, outgoing) = mpsc::channel(4096);
        let mut request = tonic::Request::new(ReceiverStream::new(outgoing));
        let header = encode_channel_metadata(&CreateProducerRequest {
            pchannel: Some(channel),
        });
        request.metadata_mut().insert(
            CREATE_PRODUCER_KEY,
            header
                .parse()
                .map_err(|_| ClientError::Rpc(tonic::Status::internal("metadata")))?,
        );
        if let Some(credential) = credential {
            credential.attach(request.metadata_mut());
        }
        let mut responses = client.produce(request).await?.into_inner();
        match responses.message().await? {
            Some(ProduceResponse {
                response: Some(produce_response::Response::Create(_)),
            }) => {}
            _ => return Err(ClientError::Ended),
        }
        Ok(Self {
            requests,
            responses,
            next_request: 1,
        })
    }

    /// Sends one message without waiting; returns its request ID.
    pub async fn send(&mut self, message: Message) -> Result<i64, ClientError> {
        let request_id = self.next_request;
        self.next_request += 1;
        self.requests
            .send(ProduceRequest {
                request: Some(produce_request::Request::Produce(ProduceMessageRequest {
                    request_id,
                    message: Some(message),
                })),
            })
            .await
            .map_err(|_| ClientError::Ended)?;
        Ok(request_id)
    }

    /// The next answer, in request order: `(request_id, outcome)`.
    pub async fn receive(&mut self) -> Result<(i64, ProduceOutcome), ClientError> {
        loop {
            let Some(response) = self.responses.message().await? else {
                return Err(ClientError::Ended);
            };
            if let Some(produce_response::Response::Produce(answer)) = response.response {
                let outcome = match answer.response {
                    Some(produce_message_response::Response::Result(result)) => Ok(result),
                    Some(produce_message_response::Response::Error(error)) => {
                        Err(ClientError::Streaming(StreamingFailure::from_proto(&error)))
                    }
                    None => Err(ClientError::Ended),
                };
                return Ok((answer.request_id, outcome));
            }
        }
    }

    /// Sends one message and waits for its answer.
    pub async fn produce(&mut self, message: Message) -> ProduceOutcome {
        self.send(message).await?;
        self.receive().await?.1
    }
}

/// Opens a Consume stream on the holder at `address`.
pub async fn consume(
    address: &str,
    channel: PChannelInfo,
    policy: deliver_policy::Policy,
) -> Result<impl tokio_stream::Stream<Item = Result<ImmutableMessage, ClientError>>, ClientError> {
    consume_as(address, channel, policy, None).await
}

/// [`consume`] presenting `credential`.
pub async fn consume_as(
    address: &str,
    channel: PChannelInfo,
    policy: deliver_policy::Policy,
    credential: Option<&Credential>,
) -> Result<impl tokio_stream::Stream<Item = Result<ImmutableMessage, ClientError>>, ClientError> {
    let mut client = StreamingNodeHandlerServiceClient::new(connect(address).await?)
        .max_decoding_message_size(64 << 20);
    let name = channel.name.clone();
    let (requests, outgoing) = mpsc::channel(4);
    requests
        .send(ConsumeRequest {
            request: Some(consume_request::Request::CreateVchannelConsumer(
                CreateVChannelConsumerRequest {
                    vchannel: name,
                    deliver_policy: Some(DeliverPolicy {
                        policy: Some(policy),
                    }),
                    ..Default::default()
                },
            )),
        })
        .await
        .map_err(|_| ClientError::Ended)?;
    let mut request = tonic::Request::new(ReceiverStream::new(outgoing));
    let header = encode_channel_metadata(&CreateConsumerRequest {
        pchannel: Some(channel),
    });
    request.metadata_mut().insert(
        CREATE_CONSUMER_KEY,
        header
            .parse()
            .map_err(|_| ClientError::Rpc(tonic::Status::internal("metadata")))?,
    );
    if let Some(credential) = credential {
        credential.attach(request.metadata_mut());
    }
    let responses = client.consume(request).await?.into_inner();
    Ok(async_stream_of(responses, requests))
}

fn async_stream_of(
    responses: tonic::Streaming<ConsumeResponse>,
    keep_open: mpsc::Sender<ConsumeRequest>,
) -> impl tokio_stream::Stream<Item = Result<ImmutableMessage, ClientError>> {
    futures::stream::unfold(
        (responses, keep_open),
        |(mut responses, keep_open)| async move {
            loop {
                match responses.message().await {
                    Ok(Some(ConsumeResponse {
                        response: Some(consume_response::Response::Consume(message)),
                    })) => {
                        let item = message.message.ok_or(ClientError::Ended);
                        return Some((item, (responses, keep_open)));
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => return None,
                    Err(status) => return Some((Err(status.into()), (responses, keep_open))),
                }
            }
        },
    )
}

/// Builds a message with `payload` and properties.
pub fn message(payload: Vec<u8>, properties: &[(&str, &str)]) -> Message {
    Message {
        payload,
        properties: properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}
