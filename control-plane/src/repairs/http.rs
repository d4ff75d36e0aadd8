//! The repair routes (spec: "Repair Actions" and get_repair in "Product
//! Actions"), plus `PUT /repairs/{id}/undo`, which the original lacks.
//!
//! Permissions: reads need OVERVIEW; writes need TECHNICAL (spec,
//! Permissions: TECHNICAL "can ... create and edit repairs"). get_repair
//! creates the repair on its first call, so it needs TECHNICAL too. Texts
//! follow `Accept-Language` (English unless French is preferred).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::{get, put, MethodRouter};
use axum::{Extension, Router};
use serde_json::{json, Map, Value as Json};

use super::definition::{DataType, InputSpec, Lang, State as WfState, Workflows};
use super::engine::Action;
use super::service::{self, Call, Choice, ListFilters};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::Permission;
use crate::error::ApiError;
use crate::web::{route_table, success, JsonBody, QueryPairs};

/// The repair routes; the workflows are loaded (and validated) here.
pub fn router() -> Router<AppState> {
    let workflows = Arc::new(
        super::load_builtin().expect("the shipped workflows are valid (checked at start, tested)"),
    );
    let routes: [(&str, MethodRouter<AppState>); 7] = [
        ("/products/{id}/get_repair", get(get_repair)),
        ("/repairs/list_current_states", get(list_current_states)),
        ("/repairs/{id}/current_state", get(current_state)),
        ("/repairs/{id}/send_inputs", put(send::<Inputs>)),
        ("/repairs/{id}/send_events", put(send::<Event>)),
        ("/repairs/{id}/history", get(history)),
        ("/repairs/{id}/undo", put(undo)),
    ];
    route_table(routes).layer(Extension(workflows))
}

/// The language of the answer, from `Accept-Language`.
pub struct AcceptLanguage(pub Lang);

impl<S: Send + Sync> FromRequestParts<S> for AcceptLanguage {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok());
        Ok(Self(Lang::from_accept_language(header)))
    }
}

/// What every repair handler needs: the application, the workflows (an
/// extension of the router) and the authenticated user.
struct Repairs {
    app: AppState,
    workflows: Arc<Workflows>,
    user: AuthUser,
}

impl FromRequestParts<AppState> for Repairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let Extension(workflows) = Extension::<Arc<Workflows>>::from_request_parts(parts, app)
            .await
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))?;
        let user = AuthUser::from_request_parts(parts, app).await?;
        Ok(Self {
            app: app.clone(),
            workflows,
            user,
        })
    }
}

impl Repairs {
    /// The user must have `permission`; then the service call's context.
    fn call(&self, permission: Permission) -> Result<Call<'_>, ApiError> {
        self.user.require(permission)?;
        Ok(Call {
            app: &self.app,
            workflows: &self.workflows,
            user: &self.user,
            now: self.app.clock.now(),
        })
    }
}

/// A repair id from the path; anything but an integer is a missing repair.
fn repair_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::NotFound(format!("Repair {id} not found")))
}

async fn get_repair(repairs: Repairs, Path(imei): Path<String>) -> Result<Response, ApiError> {
    let found = service::get_repair(&repairs.call(Permission::Technical)?, &imei).await?;
    let mut data = Map::new();
    data.insert("repair_id".into(), found.repair_id.into());
    if let Some(config) = found.config {
        data.insert("config".into(), Json::Object(config));
    }
    let message = if found.created {
        "Repair created"
    } else {
        "Repair found"
    };
    Ok(success(StatusCode::OK, message, Json::Object(data)))
}

async fn current_state(
    repairs: Repairs,
    AcceptLanguage(lang): AcceptLanguage,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let call = repairs.call(Permission::Overview)?;
    let (wf_state, choices) = service::current_state(&call, repair_id(&id)?, lang).await?;
    Ok(success(
        StatusCode::OK,
        "Repair found",
        render_state(wf_state, lang, &choices),
    ))
}

/// send_inputs and send_events: one step of the repair's workflow; they
/// differ only in the body, `B`.
async fn send<B: StepBody>(
    repairs: Repairs,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let call = repairs.call(Permission::Technical)?;
    let id = repair_id(&id)?;
    let body = B::parse(body)?;
    service::act(&call, id, body.action()).await?;
    Ok(success(StatusCode::OK, "Repair updated", json!({})))
}

/// The body of a step, checked, as the engine's [`Action`] borrows it.
trait StepBody: Sized {
    fn parse(body: Json) -> Result<Self, ApiError>;
    fn action(&self) -> Action<'_>;
}

/// The body of send_inputs.
struct Inputs(Map<String, Json>);

impl StepBody for Inputs {
    fn parse(body: Json) -> Result<Self, ApiError> {
        inputs_body(body).map(Self)
    }
    fn action(&self) -> Action<'_> {
        Action::Inputs(&self.0)
    }
}

/// The body of send_events.
struct Event(String);

impl StepBody for Event {
    fn parse(body: Json) -> Result<Self, ApiError> {
        event_body(body).map(Self)
    }
    fn action(&self) -> Action<'_> {
        Action::Event(&self.0)
    }
}

/// `{"voltage": 4.8, "serial": "..."}`; a list of such objects (the
/// spec's example writes the object inside `[...]`) is merged.
fn inputs_body(body: Json) -> Result<Map<String, Json>, ApiError> {
    let bad = || {
        ApiError::BadRequest(
            "send_inputs expects a JSON object of input ident to value, e.g. {\"voltage\": 4.8}"
                .into(),
        )
    };
    match body {
        Json::Object(m) => Ok(m),
        Json::Array(items) => {
            let mut merged = Map::new();
            for item in items {
                let Json::Object(m) = item else {
                    return Err(bad());
                };
                merged.extend(m);
            }
            Ok(merged)
        }
        _ => Err(bad()),
    }
}

/// `{"event": "battery.charged"}`, or that object alone in a list.
fn event_body(body: Json) -> Result<String, ApiError> {
    let object = match body {
        Json::Object(m) => m,
        Json::Array(mut items) if items.len() == 1 && items[0].is_object() => match items.pop() {
            Some(Json::Object(m)) => m,
            _ => Map::new(),
        },
        _ => Map::new(),
    };
    if let Some(extra) = object.keys().find(|k| *k != "event") {
        return Err(ApiError::field(
            extra.clone(),
            format!("unknown field '{extra}': send_events takes only 'event'"),
        ));
    }
    match object.get("event") {
        Some(Json::String(e)) if !e.is_empty() => Ok(e.clone()),
        _ => Err(ApiError::field(
            "event",
            "send_events expects {\"event\": \"<event ident>\"}",
        )),
    }
}

async fn history(
    repairs: Repairs,
    AcceptLanguage(lang): AcceptLanguage,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let call = repairs.call(Permission::Overview)?;
    let states = service::history(&call, repair_id(&id)?).await?;
    let data = states.iter().map(|s| state_name(s, lang)).collect();
    Ok(success(
        StatusCode::OK,
        "Repair state found",
        Json::Array(data),
    ))
}

/// The filters of list_current_states from its query parameters; any
/// other parameter is refused.
fn list_filters(params: QueryPairs) -> Result<ListFilters, ApiError> {
    let mut filters = ListFilters::default();
    for (k, v) in params {
        match k.as_str() {
            "entity_id" => {
                filters.entity_id = Some(v.parse().map_err(|_| {
                    ApiError::field("entity_id", format!("entity_id must be an integer, got '{v}'"))
                })?)
            }
            "username" => filters.username = Some(v),
            "repair_state" => filters.repair_state = Some(v),
            other => {
                return Err(ApiError::field(
                    other,
                    format!("unknown query parameter '{other}' (expected entity_id, username or repair_state)"),
                ))
            }
        }
    }
    Ok(filters)
}

async fn list_current_states(
    repairs: Repairs,
    AcceptLanguage(lang): AcceptLanguage,
    params: QueryPairs,
) -> Result<Response, ApiError> {
    let call = repairs.call(Permission::Overview)?;
    let found = service::list_current(&call, &list_filters(params)?).await?;
    let data: Vec<Json> = found
        .iter()
        .map(|r| {
            let name = repairs
                .workflows
                .get(&r.workflow_name)
                .and_then(|wf| wf.state(&r.workflow_state_id))
                .map_or(r.workflow_state_id.as_str(), |s| s.name.get(lang));
            json!({
                "created_by": r.created_by,
                "product_imei": r.product_imei,
                "repair_id": r.repair_id,
                "repair_state_id": r.workflow_state_id,
                "repair_state_name": name,
            })
        })
        .collect();
    Ok(success(
        StatusCode::OK,
        "Repair states found",
        Json::Array(data),
    ))
}

async fn undo(
    repairs: Repairs,
    AcceptLanguage(lang): AcceptLanguage,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let call = repairs.call(Permission::Technical)?;
    let restored = service::undo(&call, repair_id(&id)?).await?;
    Ok(success(
        StatusCode::OK,
        "Repair updated",
        state_name(restored, lang),
    ))
}

/// A state as history and undo show it.
fn state_name(state: &WfState, lang: Lang) -> Json {
    json!({"ident": state.ident, "name": state.name.get(lang)})
}

/// A state as current_state shows it (keys in the spec's order).
pub fn render_state(state: &WfState, lang: Lang, choices: &HashMap<String, Vec<Choice>>) -> Json {
    let events: Vec<Json> = state
        .events
        .iter()
        .map(|e| json!({"ident": e.ident, "label": e.label.get(lang)}))
        .collect();
    let inputs: Vec<Json> = state
        .inputs
        .iter()
        .map(|i| render_input(i, lang, choices.get(&i.ident).map(Vec::as_slice)))
        .collect();
    json!({
        "description": state.description.get(lang),
        "events": events,
        "ident": state.ident,
        "inputs": inputs,
        "name": state.name.get(lang),
    })
}

fn render_input(input: &InputSpec, lang: Lang, choices: Option<&[Choice]>) -> Json {
    let mut m = Map::new();
    m.insert("data_type".into(), input.data_type.as_str().into());
    m.insert("ident".into(), input.ident.clone().into());
    m.insert("label".into(), input.label.get(lang).into());
    if input.data_type == DataType::Selection {
        let options: Vec<Json> = choices
            .unwrap_or_default()
            .iter()
            .map(|c| json!({"label": c.label, "value": c.value}))
            .collect();
        m.insert("options".into(), Json::Array(options));
        if let Some(t) = input.selection_type {
            m.insert("selection_type".into(), t.as_str().into());
        }
    }
    let rules = input.validation_rules.to_json();
    if !rules.is_empty() {
        m.insert("validation_rules".into(), Json::Object(rules));
    }
    Json::Object(m)
}
