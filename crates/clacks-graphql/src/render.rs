//! Subscription events rendered once and shared (SPEC section 9: serialize
//! an event once per wire format, not once per subscriber).
//!
//! Over WebSocket, the `message` and `events` subscription resolvers do not
//! hand their stream to async-graphql's executor (which would resolve and
//! serialize every event again for every subscriber). They hand it to the
//! connection instead, through a [`FeedSlot`]. The connection renders each
//! event by running the subscriber's own document, as a query, against a
//! schema whose root fields return that one event ([`RenderRoot`]), and
//! keeps the JSON on the shared event under a key made of the document,
//! the operation and the variables. Every other subscriber with the same
//! key reuses those bytes; the per-subscriber work is a lookup, a frame
//! header and a queue push.
//!
//! Documents that select something that depends on who is looking (a
//! user's `name` and `claims`, `seenBy`, a channel's read state, ...) get
//! the subscriber's user id in their key, so nothing rendered for one user
//! ever reaches another.

use std::collections::hash_map::DefaultHasher;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock, Mutex};

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use async_graphql::{
    Context, EmptyMutation, EmptySubscription, ID, Object, Request, Result, Schema, Variables,
};
use clacks_core::{ChannelEvent, EventPayload, Seq};
use clacks_delivery::{Rendering, SharedEvent};
use clacks_service::{Caller, ChatService, EventStream};

use crate::documents::ByQueryText;
use crate::error::{INTERNAL, coded, finalize};
use crate::guard::FetchBudget;
use crate::schema::{EventKind, EventObj, MessageObj, RequestCaller, ResumeInput};

/// A subscription stream handed from a resolver to the connection.
pub struct FeedHandoff {
    pub events: EventStream,
    /// Which events this subscription shows (the `message` field shows
    /// created messages only; `events` may filter by kind).
    pub accept: Box<dyn Fn(&ChannelEvent) -> bool + Send + Sync>,
}

/// Where a resolver leaves its [`FeedHandoff`] (request data, WebSocket
/// operations only).
#[derive(Clone, Default)]
pub struct FeedSlot(Arc<Mutex<Option<FeedHandoff>>>);

impl FeedSlot {
    pub fn put(&self, handoff: FeedHandoff) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(handoff);
    }

    pub fn take(&self) -> Option<FeedHandoff> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The event being rendered (request data of a render).
struct RenderedEvent(Arc<SharedEvent>);

/// The root of the render schema: the subscription fields, with the same
/// names and arguments, each returning the event being rendered. Named
/// `Subscription` so fragments on the subscription type still apply.
pub struct RenderRoot;

#[Object(name = "Subscription")]
impl RenderRoot {
    #[allow(unused_variables)]
    async fn message(
        &self,
        ctx: &Context<'_>,
        channel: Option<ID>,
        after_seq: Option<Seq>,
    ) -> Option<MessageObj> {
        let event = ctx.data_opt::<RenderedEvent>()?;
        match &event.0.payload {
            EventPayload::MessageCreated { message } => Some(MessageObj(message.clone())),
            _ => None,
        }
    }

    #[allow(unused_variables)]
    async fn events(
        &self,
        ctx: &Context<'_>,
        channel: Option<ID>,
        after_seq: Option<Seq>,
        resume: Option<Vec<ResumeInput>>,
        kinds: Option<Vec<EventKind>>,
        thread: Option<ID>,
    ) -> Result<EventObj> {
        let event = ctx.data::<RenderedEvent>()?;
        Ok(EventObj::from_event(&event.0))
    }
}

pub type RenderSchema = Schema<RenderRoot, EmptyMutation, EmptySubscription>;

/// No limits of its own: it only runs documents the guard admitted when
/// their subscription started.
pub fn render_schema(service: Arc<ChatService>) -> RenderSchema {
    Schema::build(RenderRoot, EmptyMutation, EmptySubscription)
        .data(service)
        .finish()
}

#[derive(Clone)]
struct ParsedDocument {
    query: Arc<str>,
    /// Turned into a query, ready to run against the render schema.
    document: Arc<ExecutableDocument>,
    viewer_dependent: bool,
}

/// The render document of a subscription's admitted `document`, kept by
/// query text: clients send the same few documents, and a parsed document
/// costs kilobytes per subscription.
fn for_rendering(query: &str, document: &ExecutableDocument) -> ParsedDocument {
    static PARSED: ByQueryText<ParsedDocument> = ByQueryText::new();
    let made = PARSED.get_or_make(query, || {
        let mut document = document.clone();
        let viewer_dependent = match &document.operations {
            DocumentOperations::Single(op) => {
                depends_on_viewer(&op.node.selection_set.node, &document)
            }
            DocumentOperations::Multiple(ops) => ops
                .values()
                .any(|op| depends_on_viewer(&op.node.selection_set.node, &document)),
        };
        match &mut document.operations {
            DocumentOperations::Single(op) => op.node.ty = OperationType::Query,
            DocumentOperations::Multiple(ops) => {
                for op in ops.values_mut() {
                    op.node.ty = OperationType::Query;
                }
            }
        }
        Ok::<_, Infallible>(ParsedDocument {
            query: query.into(),
            document: Arc::new(document),
            viewer_dependent,
        })
    });
    match made {
        Ok(parsed) => parsed,
        Err(never) => match never {},
    }
}

/// How one subscription renders its events. Kept for the life of every
/// subscription, so it holds only what a render needs, compactly.
pub struct RenderPlan {
    parsed: ParsedDocument,
    operation_name: Option<Box<str>>,
    /// The variables as JSON: a few bytes instead of a tree of values;
    /// parsed again only for a render that is not shared yet.
    variables: Box<str>,
    caller: Arc<Caller>,
    /// Database fetches one render may make (the operation's limit).
    max_fetches: u64,
    /// Identifies the rendering: equal keys render equal bytes.
    pub key: u64,
}

impl RenderPlan {
    /// The plan for a subscription whose `document` (the text `query`) the
    /// guard admitted.
    pub fn new(
        query: &str,
        document: &ExecutableDocument,
        operation_name: Option<&str>,
        variables: &Variables,
        caller: Arc<Caller>,
        max_fetches: u64,
    ) -> RenderPlan {
        let parsed = for_rendering(query, document);
        let variables_json = serde_json::to_string(variables).unwrap_or_default();
        let mut hasher = DefaultHasher::new();
        query.hash(&mut hasher);
        operation_name.hash(&mut hasher);
        variables_json.hash(&mut hasher);
        if parsed.viewer_dependent {
            caller.user_id.as_str().hash(&mut hasher);
        }
        RenderPlan {
            parsed,
            operation_name: operation_name.map(Into::into),
            variables: variables_json.into(),
            caller,
            max_fetches,
            key: hasher.finish(),
        }
    }

    /// The `payload` JSON for `event`: shared when rendered already. Only
    /// renders are counted (`clacks_render_cache_misses_total`): a counter
    /// of hits would be one more shared atomic per delivery, and hits are
    /// `clacks_events_delivered_total` minus misses.
    pub async fn payload<'e>(
        &self,
        schema: &RenderSchema,
        event: &'e Arc<SharedEvent>,
    ) -> Rendering<'e> {
        if let Some(rendered) = event.rendering(self.key) {
            return rendered;
        }
        static MISSES: LazyLock<metrics::Counter> =
            LazyLock::new(|| metrics::counter!("clacks_render_cache_misses_total"));
        MISSES.increment(1);
        let response = finalize(self.render(schema, event).await);
        let rendered: Arc<str> = match serde_json::to_string(&response) {
            Ok(json) => json.into(),
            Err(_) => {
                let failed =
                    async_graphql::Response::from_errors(vec![coded(INTERNAL, "internal error")]);
                serde_json::to_string(&failed).unwrap_or_default().into()
            }
        };
        event.keep_rendering(self.key, rendered.clone());
        Rendering::Other(rendered)
    }

    /// The render as a boxed future, built outside any `async` body: the
    /// request (and the executor's state) then take no room in the
    /// future of every connection's writer, which awaits this.
    fn render<'a>(
        &self,
        schema: &'a RenderSchema,
        event: &Arc<SharedEvent>,
    ) -> futures::future::BoxFuture<'a, async_graphql::Response> {
        let variables = serde_json::from_str(&self.variables).unwrap_or_default();
        let mut request = Request::new(self.parsed.query.as_ref()).variables(variables);
        if let Some(name) = &self.operation_name {
            request = request.operation_name(name.as_ref());
        }
        request.set_parsed_query(ExecutableDocument::clone(&self.parsed.document));
        let request = request
            .data(RequestCaller(Some(self.caller.clone())))
            .data(FetchBudget::new(self.max_fetches))
            .data(RenderedEvent(event.clone()));
        Box::pin(schema.execute(request))
    }
}

/// Whether a render is rendering the creation of message `id` (whose
/// reactions and replies are known to be none, without asking the store).
pub(crate) fn is_new_message(ctx: &Context<'_>, id: clacks_core::MessageId) -> bool {
    ctx.data_opt::<RenderedEvent>().is_some_and(|event| {
        matches!(&event.0.payload, EventPayload::MessageCreated { message } if message.id == id)
    })
}

/// Field names whose value depends on who is looking.
const VIEWER_FIELDS: [&str; 9] = [
    "me",
    "name",
    "claims",
    "seenBy",
    "seen_by",
    "seen",
    "time",
    "reactedByMe",
    "mentionedMe",
];

/// Whether a selection asks for anything that differs between viewers: a
/// field of [`VIEWER_FIELDS`], or any field of a channel besides its id
/// (a channel's members, read state and history are the caller's view).
fn depends_on_viewer(selection: &SelectionSet, document: &ExecutableDocument) -> bool {
    selection.items.iter().any(|item| match &item.node {
        Selection::Field(field) => {
            let name = field.node.name.node.as_str();
            if VIEWER_FIELDS.contains(&name) {
                return true;
            }
            let children = &field.node.selection_set.node;
            if name == "channel" {
                return children.items.iter().any(|child| match &child.node {
                    Selection::Field(f) => {
                        !matches!(f.node.name.node.as_str(), "id" | "__typename")
                    }
                    _ => true,
                });
            }
            depends_on_viewer(children, document)
        }
        Selection::InlineFragment(fragment) => {
            depends_on_viewer(&fragment.node.selection_set.node, document)
        }
        Selection::FragmentSpread(spread) => document
            .fragments
            .get(&spread.node.fragment_name.node)
            // An unknown fragment fails validation anyway; assume the worst.
            .is_none_or(|fragment| depends_on_viewer(&fragment.node.selection_set.node, document)),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dependent(query: &str) -> bool {
        let document = async_graphql::parser::parse_query(query).unwrap();
        match &document.operations {
            DocumentOperations::Single(op) => {
                depends_on_viewer(&op.node.selection_set.node, &document)
            }
            DocumentOperations::Multiple(_) => unreachable!(),
        }
    }

    #[test]
    fn viewer_dependence() {
        assert!(!dependent(
            "subscription { message { id content sent_at sender { id } channel { id } } }"
        ));
        assert!(!dependent(
            "subscription { events { seq ... on ReadReceipt { userId lastReadSeq } } }"
        ));
        assert!(dependent("subscription { message { sender { name } } }"));
        assert!(dependent(
            "subscription { message { channel { displayName } } }"
        ));
        assert!(dependent("subscription { message { seenBy { userId } } }"));
        assert!(dependent(
            "subscription { message { ...F } } fragment F on Message { sender { claims } }"
        ));
        assert!(!dependent(
            "subscription { message { ...F } } fragment F on Message { id content }"
        ));
    }
}
