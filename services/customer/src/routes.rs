//! HTTP handlers of `/customers` and the OpenAPI document generated from them.
//!
//! Routes are declared once, through `utoipa_axum::routes!`, so the router and the
//! document are built from the same list and cannot drift apart.

use crate::{
    error::Error,
    model::{Customer, CustomerPatch, Email, ListQuery, Name, NewCustomer},
    store,
};
use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use hotel_common::{
    Problem,
    conditional::{self, CacheControl, IfMatch},
    extract::{Json, Path, Query},
    page::{self, Keyset, Page},
};
use hotel_events::Producer;
use hotel_service::DatabaseState;
use sqlx::AnyPool;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

/// The OpenAPI document's fixed part; paths are added from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "hotel customer service", description = "Customers of the hotel."),
    tags((name = "customers", description = "Create, find, change and delete customers"))
)]
pub struct ApiDoc;

/// The customer routes (without the shared layers) and the OpenAPI document describing
/// exactly those routes.
pub fn api(state: DatabaseState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut doc) = declared().with_state(state).split_for_parts();
    link(&mut doc);
    (router, doc)
}

/// The OpenAPI document of the customer routes, built without a database.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = declared().into_openapi();
    link(&mut doc);
    doc
}

/// Links from a create to the read, update and delete of the customer it made, and the
/// conditional request rules (validators, 304, `If-Match`, 412).
fn link(doc: &mut utoipa::openapi::OpenApi) {
    hotel_common::openapi::link_created(doc, "/customers", &["/customers/{id}"]);
    conditional::document(
        doc,
        &["/customers", "/customers/{id}"],
        &[],
        conditional::PERSONAL,
    );
}

/// Customers are personal data: never stored by a shared cache (nor configurable).
fn cache() -> CacheControl {
    CacheControl::personal()
}

/// Every customer route, each declared once for both the router and the document.
fn declared() -> OpenApiRouter<DatabaseState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(create_customer, list_customers))
        .routes(routes!(get_customer, update_customer, delete_customer))
}

/// Create a customer.
#[utoipa::path(
    post, path = "/customers", tag = "customers",
    request_body = NewCustomer,
    params(
        ("X-Forwarded-Prefix" = Option<String>, Header,
         description = "Path prefix a proxy strips (such as `/api`), put back in front of `Location`"),
    ),
    responses(
        (status = 201, description = "Created; `Location` names the customer, `ETag` its first version", body = Customer,
         headers(("Location" = String, description = "Path of the new customer"),
                 ("ETag" = String, description = "Strong entity tag of the new customer"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email already in use", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not sent as application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing, unknown, of the wrong type or invalid (named in `errors`), or the body is not an object", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_customer(
    State(pool): State<AnyPool>,
    headers: HeaderMap,
    Json(body): Json<NewCustomer>,
) -> Result<Response, Error> {
    let customer = store::insert(&pool, body.name.into_string(), body.email.into_string()).await?;
    let id = customer.value.id;
    tracing::info!(customer.id = %id, "customer created");
    let location = format!(
        "{}/customers/{id}",
        hotel_common::http::forwarded_prefix(&headers)
    );
    let mut res = cache().changed(StatusCode::CREATED, &customer.validators, customer.value);
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

/// List customers, oldest first, optionally only the one with an email.
#[utoipa::path(
    get, path = "/customers", tag = "customers",
    params(ListQuery),
    responses(
        (status = 200, description = "One page", body = Page<Customer>),
        (status = 400, description = "Unknown or malformed query parameter, or a cursor this list did not return", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "limit out of range", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_customers(
    State(pool): State<AnyPool>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, Error> {
    let limit = page::limit(q.limit)?;
    let after = page::after::<Keyset>(q.cursor.as_deref())?;
    let email = q.email.as_deref().map(str::trim).filter(|e| !e.is_empty());
    let (page, tag): (Page<Customer>, _) = store::list(&pool, email, after, limit).await?;
    Ok(cache().answer(&headers, &tag, page))
}

/// Get one customer, with their booking counts.
#[utoipa::path(
    get, path = "/customers/{id}", tag = "customers",
    params(("id" = Uuid, Path, description = "Customer id")),
    responses(
        (status = 200, description = "The customer", body = Customer),
        (status = 400, description = "id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such customer", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_customer(
    State(pool): State<AnyPool>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Result<Response, Error> {
    let customer = store::get(&pool, id).await?;
    Ok(cache().answer(&headers, &customer.validators, customer.value))
}

/// Change a customer's name and/or email; fields left out stay as they are.
#[utoipa::path(
    patch, path = "/customers/{id}", tag = "customers",
    params(("id" = Uuid, Path, description = "Customer id")),
    request_body = CustomerPatch,
    responses(
        (status = 200, description = "The changed customer", body = Customer),
        (status = 400, description = "id is not a UUID or malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such customer", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email already in use", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not sent as application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is unknown, null, of the wrong type or invalid (named in `errors`), or the body is not an object", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_customer(
    State(pool): State<AnyPool>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    Json(patch): Json<CustomerPatch>,
) -> Result<Response, Error> {
    let name = patch.name.map(Name::into_string);
    let email = patch.email.map(Email::into_string);
    let condition = IfMatch::from_headers(&headers);
    let customer = store::update(&pool, id, name, email, condition.as_ref()).await?;
    Ok(cache().changed(StatusCode::OK, &customer.validators, customer.value))
}

/// Delete a customer. Publishes `hotel.customer.deleted`: the booking service then
/// cancels the customer's current and future bookings (`cancel_reason:
/// customer_deleted`), within moments.
#[utoipa::path(
    delete, path = "/customers/{id}", tag = "customers",
    params(("id" = Uuid, Path, description = "Customer id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such customer", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_customer(
    State(pool): State<AnyPool>,
    State(producer): State<Producer>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Result<Response, Error> {
    let condition = IfMatch::from_headers(&headers);
    store::delete(&pool, &producer, id, condition.as_ref()).await?;
    tracing::info!(customer.id = %id, "customer deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}
