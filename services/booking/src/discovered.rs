//! [`Directory`] over the gateway's resilient upstream client: customer and room
//! instances found in the registry, balanced p2c over peak-EWMA, a breaker per instance,
//! budgeted retries, hedged reads and deadlines, exactly as the gateway reaches them. No
//! second hop through the gateway.

use crate::directory::{Directory, PeerError};
use crate::model::{Customer, Room};
use futures::future::BoxFuture;
use hotel_gateway::upstream::{Discovery, UpstreamClient};
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// Pages of rooms walked at most (a room service that keeps returning cursors is broken).
const MAX_ROOM_PAGES: usize = 1_000;

#[derive(serde::Deserialize)]
struct RoomPage {
    items: Vec<Room>,
    #[serde(default)]
    next_cursor: Option<String>,
}

/// Customer and room through discovered, resilient clients.
#[derive(Debug, Clone)]
pub struct DiscoveredDirectory {
    customers: UpstreamClient,
    rooms: UpstreamClient,
}

impl DiscoveredDirectory {
    /// Follows `customer` and `room` in the registry at `url`. Must run inside tokio.
    pub fn new(url: &str, token: Option<String>) -> Result<Self, hotel_gateway::settings::InvalidConfig> {
        let discovery = Discovery::Registry { url: url.to_owned(), token };
        let policy = Default::default();
        Ok(DiscoveredDirectory {
            customers: UpstreamClient::new("customer", discovery.clone(), &policy)?,
            rooms: UpstreamClient::new("room", discovery, &policy)?,
        })
    }

    /// One GET; `Ok(None)` on 404.
    async fn get<T: DeserializeOwned>(
        client: &UpstreamClient,
        service: &'static str,
        path_and_query: String,
    ) -> Result<Option<T>, PeerError> {
        let mut req = http::Request::get(path_and_query);
        // The caller's request id follows the call, so one id finds every log line.
        if let Some(ctx) = hotel_common::context::current() {
            req = req.header(hotel_common::context::REQUEST_ID, ctx.request_id);
        }
        let req = req.body(bytes::Bytes::new()).map_err(|e| PeerError::Unexpected {
            service,
            reason: format!("request: {e}"),
        })?;
        let res = client.send(req).await.map_err(|p| match p.status {
            502 => PeerError::Unreachable { service, reason: p.detail },
            status => PeerError::Unavailable { service, status },
        })?;
        let status = res.status();
        if status == http::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
            return Err(PeerError::Unavailable { service, status: status.as_u16() });
        }
        if !status.is_success() {
            return Err(PeerError::Unexpected { service, reason: format!("status {status}") });
        }
        serde_json::from_slice(res.body())
            .map(Some)
            .map_err(|e| PeerError::Unexpected { service, reason: format!("body: {e}") })
    }
}

impl Directory for DiscoveredDirectory {
    fn customer(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Customer>, PeerError>> {
        Box::pin(Self::get(&self.customers, "customer", format!("/customers/{id}")))
    }

    fn room(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Room>, PeerError>> {
        Box::pin(Self::get(&self.rooms, "room", format!("/rooms/{id}")))
    }

    fn rooms(&self, min_capacity: i64) -> BoxFuture<'_, Result<Vec<Room>, PeerError>> {
        Box::pin(async move {
            let mut rooms = Vec::new();
            let mut cursor: Option<String> = None;
            for _ in 0..MAX_ROOM_PAGES {
                let mut q = form_urlencoded::Serializer::new(String::new());
                q.append_pair("min_capacity", &min_capacity.to_string())
                    .append_pair("status", "available")
                    .append_pair("limit", "100");
                if let Some(c) = &cursor {
                    q.append_pair("cursor", c);
                }
                let page: RoomPage = Self::get(&self.rooms, "room", format!("/rooms?{}", q.finish()))
                    .await?
                    .ok_or_else(|| PeerError::Unexpected {
                        service: "room",
                        reason: "GET /rooms answered 404".into(),
                    })?;
                rooms.extend(page.items);
                match page.next_cursor {
                    Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                    Some(_) => {
                        return Err(PeerError::Unexpected {
                            service: "room",
                            reason: "GET /rooms repeated its cursor".into(),
                        });
                    }
                    None => return Ok(rooms),
                }
            }
            Err(PeerError::Unexpected {
                service: "room",
                reason: format!("GET /rooms had more than {MAX_ROOM_PAGES} pages"),
            })
        })
    }
}
