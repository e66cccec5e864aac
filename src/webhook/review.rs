//! The `AdmissionReview` envelope that both endpoints read (`POST /mutate`, `POST /route`), and
//! the answer they give: always allowed, with an optional JSON patch.

use base64::Engine;
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::WebhookError;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review<O> {
    #[serde(default)]
    api_version: Option<String>,
    request: Option<Request<O>>,
}

/// One admission request, its object read as `O`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Request<O> {
    pub uid: String,
    #[serde(default)]
    pub resource: Resource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "Option::default")]
    pub object: Option<O>,
}

#[derive(Deserialize, Default)]
pub(crate) struct Resource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub resource: String,
}

impl<O> Request<O> {
    /// A CREATE of a core `pods` object, of sub-resource `sub` (`""`: the Pod itself).
    pub fn is_pod_create(&self, sub: &str) -> bool {
        self.resource.group.is_empty()
            && self.resource.resource == "pods"
            && self.sub_resource.as_deref().unwrap_or("") == sub
            && self.operation == "CREATE"
    }
}

/// The review in `body`: its `apiVersion` and its request.
pub(crate) fn read<O: DeserializeOwned>(
    body: &[u8],
) -> Result<(Option<String>, Request<O>), WebhookError> {
    let review: Review<O> = serde_json::from_slice(body).map_err(WebhookError::BadReview)?;
    let req = review.request.ok_or(WebhookError::NoRequest)?;
    Ok((review.api_version, req))
}

/// The `AdmissionReview` answer to request `uid`: allowed, with `patch` when it is not empty.
pub(crate) fn answer(
    api_version: Option<&str>,
    uid: &str,
    patch: &[Value],
) -> Result<Value, WebhookError> {
    let mut response = json!({"uid": uid, "allowed": true});
    if !patch.is_empty() {
        let text = serde_json::to_vec(patch).map_err(WebhookError::BadReview)?;
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
    Ok(json!({
        "apiVersion": api_version.unwrap_or("admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": response,
    }))
}
