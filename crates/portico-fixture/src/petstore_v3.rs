//! The Swagger Petstore v3 API under `/api/v3` of `--transport rest`: its OpenAPI 3.0 document at
//! `/api/v3/openapi.json` (servers `/api/v3`, shared request bodies, `$ref`s into the components,
//! JSON and form bodies, path, query and header parameters, as the well-known document has them), and
//! an in-memory implementation of its pet and store operations. The user operations are described
//! but not implemented (404), as a partial deployment of a real API would be.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Default)]
struct Store {
    pets: BTreeMap<i64, Value>,
    orders: BTreeMap<i64, Value>,
}

type Shared = State<Arc<Mutex<Store>>>;

fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

fn path_id(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "integer", "format": "int64"}})
}

fn replies(ok: &str, schema: Option<Value>) -> Value {
    let mut ok = json!({"description": ok});
    if let Some(schema) = schema {
        ok["content"] = json!({"application/json": {"schema": schema}});
    }
    json!({"200": ok, "400": {"description": "Invalid input"}, "404": {"description": "Not found"}})
}

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The document, shaped as the Swagger Petstore v3 one is.
pub fn document() -> Value {
    let pet_body = json!({"$ref": "#/components/requestBodies/Pet"});
    json!({
        "openapi": "3.0.4",
        "info": {"title": "Swagger Petstore - OpenAPI 3.0", "version": "1.0.27",
            "description": "A sample Pet Store Server based on the OpenAPI 3.0 specification."},
        "servers": [{"url": "/api/v3"}],
        "tags": [{"name": "pet"}, {"name": "store"}, {"name": "user"}],
        "paths": {
            "/pet": {
                "put": {"tags": ["pet"], "summary": "Update an existing pet.", "operationId": "updatePet",
                    "requestBody": pet_body, "responses": replies("Successful operation", Some(schema("Pet")))},
                "post": {"tags": ["pet"], "summary": "Add a new pet to the store.", "operationId": "addPet",
                    "requestBody": pet_body, "responses": replies("Successful operation", Some(schema("Pet")))}
            },
            "/pet/findByStatus": {"get": {"tags": ["pet"], "summary": "Finds Pets by status.",
                "operationId": "findPetsByStatus",
                "parameters": [{"name": "status", "in": "query", "required": false, "explode": true,
                    "schema": {"type": "string", "default": "available", "enum": ["available", "pending", "sold"]}}],
                "responses": replies("successful operation", Some(json!({"type": "array", "items": schema("Pet")})))}},
            "/pet/findByTags": {"get": {"tags": ["pet"], "summary": "Finds Pets by tags.",
                "operationId": "findPetsByTags",
                "parameters": [{"name": "tags", "in": "query", "required": false, "explode": true,
                    "schema": {"type": "array", "items": {"type": "string"}}}],
                "responses": replies("successful operation", Some(json!({"type": "array", "items": schema("Pet")})))}},
            "/pet/{petId}": {
                "get": {"tags": ["pet"], "summary": "Find pet by ID.", "operationId": "getPetById",
                    "parameters": [path_id("petId")], "responses": replies("successful operation", Some(schema("Pet")))},
                "post": {"tags": ["pet"], "summary": "Updates a pet in the store with form data.",
                    "operationId": "updatePetWithForm",
                    "parameters": [path_id("petId"),
                        {"name": "name", "in": "query", "schema": {"type": "string"}},
                        {"name": "status", "in": "query", "schema": {"type": "string"}}],
                    "responses": replies("successful operation", Some(schema("Pet")))},
                "delete": {"tags": ["pet"], "summary": "Deletes a pet.", "operationId": "deletePet",
                    "parameters": [{"name": "api_key", "in": "header", "required": false, "schema": {"type": "string"}},
                        path_id("petId")],
                    "responses": replies("Pet deleted", None)}
            },
            "/pet/{petId}/uploadImage": {"post": {"tags": ["pet"], "summary": "Uploads an image.",
                "operationId": "uploadFile",
                "parameters": [path_id("petId"),
                    {"name": "additionalMetadata", "in": "query", "required": false, "schema": {"type": "string"}}],
                "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": replies("successful operation", Some(schema("ApiResponse")))}},
            "/store/inventory": {"get": {"tags": ["store"], "summary": "Returns pet inventories by status.",
                "operationId": "getInventory",
                "responses": replies("successful operation",
                    Some(json!({"type": "object", "additionalProperties": {"type": "integer", "format": "int32"}})))}},
            "/store/order": {"post": {"tags": ["store"], "summary": "Place an order for a pet.",
                "operationId": "placeOrder",
                "requestBody": {"content": {
                    "application/json": {"schema": schema("Order")},
                    "application/xml": {"schema": schema("Order")},
                    "application/x-www-form-urlencoded": {"schema": schema("Order")}}},
                "responses": replies("successful operation", Some(schema("Order")))}},
            "/store/order/{orderId}": {
                "get": {"tags": ["store"], "summary": "Find purchase order by ID.", "operationId": "getOrderById",
                    "parameters": [path_id("orderId")], "responses": replies("successful operation", Some(schema("Order")))},
                "delete": {"tags": ["store"], "summary": "Delete purchase order by identifier.", "operationId": "deleteOrder",
                    "parameters": [path_id("orderId")], "responses": replies("order deleted", None)}
            },
            "/user": {"post": {"tags": ["user"], "summary": "Create user.", "operationId": "createUser",
                "requestBody": {"content": {"application/json": {"schema": schema("User")},
                    "application/x-www-form-urlencoded": {"schema": schema("User")}}},
                "responses": replies("successful operation", Some(schema("User")))}},
            "/user/createWithList": {"post": {"tags": ["user"], "summary": "Creates list of users with given input array.",
                "operationId": "createUsersWithListInput",
                "requestBody": {"content": {"application/json": {"schema": {"type": "array", "items": schema("User")}}}},
                "responses": replies("Successful operation", Some(schema("User")))}},
            "/user/login": {"get": {"tags": ["user"], "summary": "Logs user into the system.", "operationId": "loginUser",
                "parameters": [{"name": "username", "in": "query", "schema": {"type": "string"}},
                    {"name": "password", "in": "query", "schema": {"type": "string"}}],
                "responses": replies("successful operation", Some(json!({"type": "string"})))}},
            "/user/logout": {"get": {"tags": ["user"], "summary": "Logs out current logged in user session.",
                "operationId": "logoutUser", "parameters": [], "responses": replies("successful operation", None)}},
            "/user/{username}": {
                "get": {"tags": ["user"], "summary": "Get user by user name.", "operationId": "getUserByName",
                    "parameters": [{"name": "username", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": replies("successful operation", Some(schema("User")))},
                "put": {"tags": ["user"], "summary": "Update user resource.", "operationId": "updateUser",
                    "parameters": [{"name": "username", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "requestBody": {"content": {"application/json": {"schema": schema("User")}}},
                    "responses": replies("successful operation", None)},
                "delete": {"tags": ["user"], "summary": "Delete user resource.", "operationId": "deleteUser",
                    "parameters": [{"name": "username", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": replies("User deleted", None)}
            }
        },
        "components": {
            "schemas": {
                "Order": {"type": "object", "properties": {
                    "id": {"type": "integer", "format": "int64", "example": 10},
                    "petId": {"type": "integer", "format": "int64", "example": 198772},
                    "quantity": {"type": "integer", "format": "int32", "example": 7},
                    "shipDate": {"type": "string", "format": "date-time"},
                    "status": {"type": "string", "description": "Order Status", "example": "approved",
                        "enum": ["placed", "approved", "delivered"]},
                    "complete": {"type": "boolean"}}},
                "Category": {"type": "object", "properties": {
                    "id": {"type": "integer", "format": "int64", "example": 1},
                    "name": {"type": "string", "example": "Dogs"}}},
                "User": {"type": "object", "properties": {
                    "id": {"type": "integer", "format": "int64"}, "username": {"type": "string"},
                    "firstName": {"type": "string"}, "lastName": {"type": "string"},
                    "email": {"type": "string"}, "password": {"type": "string"}, "phone": {"type": "string"},
                    "userStatus": {"type": "integer", "description": "User Status", "format": "int32"}}},
                "Tag": {"type": "object", "properties": {
                    "id": {"type": "integer", "format": "int64"}, "name": {"type": "string"}}},
                "Pet": {"required": ["name", "photoUrls"], "type": "object", "properties": {
                    "id": {"type": "integer", "format": "int64", "example": 10},
                    "name": {"type": "string", "example": "doggie"},
                    "category": schema("Category"),
                    "photoUrls": {"type": "array", "items": {"type": "string"}},
                    "tags": {"type": "array", "items": schema("Tag")},
                    "status": {"type": "string", "description": "pet status in the store",
                        "enum": ["available", "pending", "sold"]}}},
                "ApiResponse": {"type": "object", "properties": {
                    "code": {"type": "integer", "format": "int32"}, "type": {"type": "string"},
                    "message": {"type": "string"}}}
            },
            "requestBodies": {
                "Pet": {"description": "Pet object that needs to be added to the store", "required": true,
                    "content": {"application/json": {"schema": schema("Pet")},
                        "application/xml": {"schema": schema("Pet")},
                        "application/x-www-form-urlencoded": {"schema": schema("Pet")}}}
            },
            "securitySchemes": {
                "api_key": {"type": "apiKey", "name": "api_key", "in": "header"}
            }
        }
    })
}

fn invalid(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"code": 400, "message": message})),
    )
        .into_response()
}

fn missing(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"code": 404, "message": format!("{what} not found")})),
    )
        .into_response()
}

/// `addPet` and `updatePet`: the pet as sent, kept by its id.
async fn put_pet(State(store): Shared, Json(pet): Json<Value>) -> Response {
    let (Some(id), Some(_)) = (pet["id"].as_i64(), pet["name"].as_str()) else {
        return invalid("a pet needs an integer `id` and a `name`");
    };
    lock(&store).pets.insert(id, pet.clone());
    Json(pet).into_response()
}

async fn find_by_status(
    State(store): Shared,
    Query(query): Query<BTreeMap<String, String>>,
) -> Json<Value> {
    let status = query.get("status").map_or("available", String::as_str);
    let pets: Vec<Value> = lock(&store)
        .pets
        .values()
        .filter(|p| p["status"] == status)
        .cloned()
        .collect();
    Json(Value::Array(pets))
}

async fn find_by_tags(
    State(store): Shared,
    Query(query): Query<Vec<(String, String)>>,
) -> Json<Value> {
    let wanted: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "tags")
        .map(|(_, v)| v.as_str())
        .collect();
    let tagged = |pet: &Value| {
        pet["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["name"].as_str().is_some_and(|n| wanted.contains(&n)))
    };
    let pets: Vec<Value> = lock(&store)
        .pets
        .values()
        .filter(|p| tagged(p))
        .cloned()
        .collect();
    Json(Value::Array(pets))
}

async fn get_pet(State(store): Shared, Path(id): Path<i64>) -> Response {
    match lock(&store).pets.get(&id) {
        Some(pet) => Json(pet.clone()).into_response(),
        None => missing("Pet"),
    }
}

async fn update_with_form(
    State(store): Shared,
    Path(id): Path<i64>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let mut store = lock(&store);
    let Some(pet) = store.pets.get_mut(&id) else {
        return missing("Pet");
    };
    for field in ["name", "status"] {
        if let Some(value) = query.get(field) {
            pet[field] = json!(value);
        }
    }
    Json(pet.clone()).into_response()
}

async fn delete_pet(State(store): Shared, Path(id): Path<i64>, headers: HeaderMap) -> Response {
    if headers.get("api_key").is_none() {
        return invalid("missing api_key header");
    }
    match lock(&store).pets.remove(&id) {
        Some(_) => Json(json!({"code": 200, "message": "Pet deleted"})).into_response(),
        None => missing("Pet"),
    }
}

async fn inventory(State(store): Shared) -> Json<Value> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for pet in lock(&store).pets.values() {
        if let Some(status) = pet["status"].as_str() {
            *counts.entry(status.to_string()).or_default() += 1;
        }
    }
    Json(json!(counts))
}

/// `placeOrder` takes the order as JSON (what Portico sends when the operation offers it).
async fn place_order(State(store): Shared, Json(order): Json<Value>) -> Response {
    let Some(id) = order["id"].as_i64() else {
        return invalid("an order needs an integer `id`");
    };
    lock(&store).orders.insert(id, order.clone());
    Json(order).into_response()
}

async fn get_order(State(store): Shared, Path(id): Path<i64>) -> Response {
    match lock(&store).orders.get(&id) {
        Some(order) => Json(order.clone()).into_response(),
        None => missing("Order"),
    }
}

/// The routes under `/api/v3`.
pub fn router() -> axum::Router {
    axum::Router::new()
        .route("/openapi.json", get(|| async { Json(document()) }))
        .route("/pet", post(put_pet).put(put_pet))
        .route("/pet/findByStatus", get(find_by_status))
        .route("/pet/findByTags", get(find_by_tags))
        .route(
            "/pet/{petId}",
            get(get_pet).post(update_with_form).delete(delete_pet),
        )
        .route("/store/inventory", get(inventory))
        .route("/store/order", post(place_order))
        .route("/store/order/{orderId}", get(get_order))
        .with_state(Arc::new(Mutex::new(Store::default())))
}
