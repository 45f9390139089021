//! `--transport rest`: a small REST service (not MCP), a pet store kept in memory, with its OpenAPI
//! document at `/openapi.json`, and the Swagger Petstore v3 API under `/api/v3`
//! ([`crate::petstore_v3`]). Portico's `openapi` targets are tested against it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Default)]
struct Store {
    pets: BTreeMap<u64, Value>,
    next_id: u64,
}

type Shared = State<Arc<Mutex<Store>>>;

/// The service's OpenAPI document.
pub fn document() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Pet store", "version": "1.0.0"},
        "paths": {
            "/pets": {
                "get": {
                    "operationId": "listPets",
                    "summary": "List pets",
                    "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                        {"name": "tag", "in": "query", "description": "Only pets with this tag", "schema": {"type": "string"}}
                    ],
                    "responses": {"200": {"description": "pets"}}
                },
                "post": {
                    "operationId": "createPet",
                    "summary": "Add a pet",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewPet"}}}},
                    "responses": {"201": {"description": "created"}}
                }
            },
            "/pets/{petId}": {
                "parameters": [{"name": "petId", "in": "path", "required": true, "schema": {"type": "integer"}}],
                "get": {"operationId": "getPet", "summary": "One pet", "responses": {"200": {"description": "the pet"}, "404": {"description": "no such pet"}}},
                "delete": {"operationId": "deletePet", "summary": "Remove a pet", "responses": {"204": {"description": "removed"}}}
            },
            "/echo": {
                "get": {
                    "operationId": "echoRequest",
                    "summary": "What the service received",
                    "parameters": [
                        {"name": "q", "in": "query", "schema": {"type": "string"}},
                        {"name": "x-request-tag", "in": "header", "schema": {"type": "string"}}
                    ],
                    "responses": {"200": {"description": "headers and query"}}
                }
            },
            "/health": {"get": {"summary": "no operationId: not a tool", "responses": {"200": {"description": "ok"}}}}
        },
        "components": {
            "schemas": {
                "NewPet": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "tag": {"type": "string"}}
                }
            }
        }
    })
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    tag: Option<String>,
}

async fn list(State(store): Shared, Query(query): Query<ListQuery>) -> Json<Value> {
    let store = store.lock().unwrap_or_else(|p| p.into_inner());
    let pets: Vec<Value> = store
        .pets
        .values()
        .filter(|pet| query.tag.as_ref().is_none_or(|tag| pet["tag"] == **tag))
        .take(query.limit.unwrap_or(usize::MAX))
        .cloned()
        .collect();
    Json(json!({ "pets": pets }))
}

async fn create(State(store): Shared, Json(body): Json<Value>) -> Response {
    let Some(name) = body["name"].as_str() else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "`name` is required"})),
        )
            .into_response();
    };
    let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
    store.next_id += 1;
    let id = store.next_id;
    let pet = json!({"id": id, "name": name, "tag": body["tag"]});
    store.pets.insert(id, pet.clone());
    (StatusCode::CREATED, Json(pet)).into_response()
}

fn not_found(id: u64) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("pet {id} not found")})),
    )
        .into_response()
}

async fn get_pet(State(store): Shared, Path(id): Path<u64>) -> Response {
    let store = store.lock().unwrap_or_else(|p| p.into_inner());
    match store.pets.get(&id) {
        Some(pet) => Json(pet.clone()).into_response(),
        None => not_found(id),
    }
}

async fn delete_pet(State(store): Shared, Path(id): Path<u64>) -> Response {
    let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
    match store.pets.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(id),
    }
}

async fn echo(headers: HeaderMap, Query(query): Query<BTreeMap<String, String>>) -> Json<Value> {
    let headers: BTreeMap<&str, &str> = headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    Json(json!({"headers": headers, "query": query}))
}

/// What the service received as a POST: headers, query and the body as text (a form, for tests of
/// form bodies, which the pet store's own document does not describe).
async fn echo_post(
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
    body: String,
) -> Json<Value> {
    let headers: BTreeMap<&str, &str> = headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    Json(json!({"headers": headers, "query": query, "body": body}))
}

/// Answers after `ms` milliseconds (for timeouts).
async fn slow(Query(query): Query<BTreeMap<String, u64>>) -> &'static str {
    let ms = query.get("ms").copied().unwrap_or(0);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    "done"
}

/// Any other path: 404 naming the path as received, so a proxy's path handling can be checked.
async fn unknown_path(uri: axum::http::Uri) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"path": uri.path()}))).into_response()
}

/// Serves until the process ends; prints `listening on http://ADDR` once it accepts connections.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route("/openapi.json", get(|| async { Json(document()) }))
        .route("/pets", get(list).post(create))
        .route("/pets/{petId}", get(get_pet).delete(delete_pet))
        .route("/echo", get(echo).post(echo_post))
        .route("/health", get(|| async { "ok" }))
        .route("/slow", get(slow))
        .fallback(unknown_path)
        .with_state(Arc::new(Mutex::new(Store::default())))
        .nest("/api/v3", crate::petstore_v3::router());
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
