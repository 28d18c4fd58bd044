//! The request guard: every client document passes here before async-graphql
//! parses, validates or executes anything (HTTP `POST`/`GET /graphql`, each
//! operation of a batch, each WebSocket `subscribe`/`start`).
//!
//! Why before: the engine's validation walks every fragment spread anew and
//! checks nesting only after parsing, so a 1.3 KB document of nested spreads
//! held a core for seconds, and its parser recurses once per bracket. The
//! guard checks, in this order, each step bounding the cost of the next:
//! 1. the document's length in bytes;
//! 2. a scan of the text (a loop, no recursion): tokens, and the nesting of
//!    selections and argument values (`depth`), so the parser only ever
//!    sees shallow documents;
//! 3. the parsed document, measured once per fragment (see [`measure`]):
//!    selections once fragments are inlined (what validation walks),
//!    aliases, directives, depth through fragments, root fields,
//!    introspection nesting, and the cost of each operation.
//!
//! The cost sees rows: each field costs its `@cost(weight:)` (1 unless
//! declared; resolvers that reach the database declare more), and a list
//! field multiplies the cost of its selection by the rows it returns, its
//! `@listSize` size argument (clamped to the largest page) or assumed size.
//! Estimates can be wrong (a user in more channels than assumed), so each
//! operation also carries a [`FetchBudget`] that resolvers charge as they
//! reach the database.
//!
//! Refusals carry `extensions.code = LIMIT_EXCEEDED` with `limit`, `max` and
//! `actual`. Introspection (`__schema`, `__type`) without a token is refused
//! with `UNAUTHENTICATED` unless it is configured public.

mod lexer;
mod measure;
mod shapes;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ErrorExtensionValues, Request, Response, ServerError};

pub use self::measure::Pages;
use self::shapes::Shapes;
use crate::documents;
use crate::error::{BAD_USER_INPUT, LIMIT_EXCEEDED, UNAUTHENTICATED};

/// The limits on one GraphQL request. Defaults keep every bundled client,
/// GraphiQL's and graphql-js's introspection queries well inside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Length of the document text, in bytes.
    pub document_bytes: u64,
    /// Lexical tokens of the document.
    pub tokens: u64,
    /// Fields nested in fields (through fragments), and argument values
    /// nested in values.
    pub depth: u64,
    /// Selections of all operations and fragment definitions once every
    /// fragment is inlined.
    pub inlined_selections: u64,
    /// Aliased fields of an operation, fragments inlined.
    pub aliases: u64,
    /// Directives of an operation, fragments inlined.
    pub directives: u64,
    /// Fields at the top level of an operation.
    pub root_fields: u64,
    /// Cost of an operation (field weights times list rows).
    pub cost: u64,
    /// Operations in one HTTP batch.
    pub batch: u64,
    /// Resolutions that reach the database during one operation.
    pub database_fetches: u64,
}

impl RequestLimits {
    pub const DEFAULT: RequestLimits = RequestLimits {
        document_bytes: 32 * 1024,
        tokens: 2_000,
        depth: 16,
        inlined_selections: 2_000,
        aliases: 15,
        directives: 50,
        root_fields: 10,
        cost: 10_000,
        batch: 10,
        database_fetches: 500,
    };
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits::DEFAULT
    }
}

/// graphql-js's limit on introspection lists leading back to types
/// (`fields`, `interfaces`, `possibleTypes`, `inputFields`) nested in each
/// other; a fixed rule, as there: introspection itself needs 1.
pub const MAX_INTROSPECTION_NESTING: u64 = 2;

/// Which limit a refusal is about (`extensions.limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    DocumentBytes,
    Tokens,
    Depth,
    InlinedSelections,
    Aliases,
    Directives,
    RootFields,
    Cost,
    Batch,
    DatabaseFetches,
    IntrospectionNesting,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::DocumentBytes => "documentBytes",
            Limit::Tokens => "tokens",
            Limit::Depth => "depth",
            Limit::InlinedSelections => "inlinedSelections",
            Limit::Aliases => "aliases",
            Limit::Directives => "directives",
            Limit::RootFields => "rootFields",
            Limit::Cost => "cost",
            Limit::Batch => "batch",
            Limit::DatabaseFetches => "databaseFetches",
            Limit::IntrospectionNesting => "introspectionNesting",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Limit::DocumentBytes => "document bytes",
            Limit::Tokens => "document tokens",
            Limit::Depth => "nesting depth",
            Limit::InlinedSelections => "selections once fragments are inlined",
            Limit::Aliases => "aliases",
            Limit::Directives => "directives",
            Limit::RootFields => "root fields",
            Limit::Cost => "operation cost",
            Limit::Batch => "operations in one batch",
            Limit::DatabaseFetches => "database fetches",
            Limit::IntrospectionNesting => "nested introspection lists",
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// `actual` is over `max`.
    Limit { limit: Limit, max: u64, actual: u64 },
    /// Introspection without a token, and it is not public.
    IntrospectionNeedsToken,
    /// The document does not parse, or fragments spread themselves.
    Invalid(ServerError),
}

impl Refusal {
    fn message(&self) -> String {
        match self {
            Refusal::Limit { limit, max, actual } => format!(
                "request limit exceeded: {} {actual}, at most {max}",
                limit.what()
            ),
            Refusal::IntrospectionNeedsToken => "introspection needs a bearer token".to_owned(),
            Refusal::Invalid(error) => error.message.clone(),
        }
    }

    fn extensions(&self) -> ErrorExtensionValues {
        let mut extensions = ErrorExtensionValues::default();
        match self {
            Refusal::Limit { limit, max, actual } => {
                extensions.set("code", LIMIT_EXCEEDED);
                extensions.set("limit", limit.as_str());
                extensions.set("max", *max);
                extensions.set("actual", *actual);
            }
            Refusal::IntrospectionNeedsToken => extensions.set("code", UNAUTHENTICATED),
            Refusal::Invalid(_) => extensions.set("code", BAD_USER_INPUT),
        }
        extensions
    }

    fn count(&self) {
        if let Refusal::Limit { limit, .. } = self {
            metrics::counter!("clacks_graphql_refused_total", "limit" => limit.as_str())
                .increment(1);
        }
    }

    pub fn into_server_error(self) -> ServerError {
        let extensions = self.extensions();
        let mut error = match self {
            Refusal::Invalid(error) => error,
            other => ServerError::new(other.message(), None),
        };
        error.extensions = Some(extensions);
        error
    }

    /// As a resolver's error: the field fails, the operation goes on.
    pub fn into_error(self) -> async_graphql::Error {
        async_graphql::Error {
            message: self.message(),
            source: None,
            extensions: Some(self.extensions()),
        }
    }

    pub fn into_response(self) -> Response {
        Response::from_errors(vec![self.into_server_error()])
    }
}

/// A document the guard let through.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The cost of the operation that will run (the number the cost limit
    /// checks; 0 when no operation matches the request's name, which the
    /// engine then refuses).
    pub cost: u64,
    /// The parsed document, also set on the request.
    pub document: Arc<ExecutableDocument>,
}

/// The database fetches one operation may still make (request data): every
/// resolver that reaches the database charges one before it does.
#[derive(Debug)]
pub struct FetchBudget {
    used: AtomicU64,
    max: u64,
}

impl FetchBudget {
    pub fn new(max: u64) -> FetchBudget {
        FetchBudget {
            used: AtomicU64::new(0),
            max,
        }
    }

    pub fn charge(&self) -> Result<(), Refusal> {
        let used = self.used.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if used > self.max {
            let refusal = Refusal::Limit {
                limit: Limit::DatabaseFetches,
                max: self.max,
                actual: used,
            };
            refusal.count();
            return Err(refusal);
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct Guard {
    limits: RequestLimits,
    public_introspection: bool,
    shapes: Shapes,
    pages: Pages,
}

impl Guard {
    /// A guard for the schema whose SDL is `sdl`.
    ///
    /// # Panics
    /// If `sdl` does not parse: it is the served schema's own, so that is
    /// a bug caught by the tests, never a client's doing.
    pub fn new(
        sdl: &str,
        limits: RequestLimits,
        public_introspection: bool,
        pages: Pages,
    ) -> Guard {
        let shapes = Shapes::from_sdl(sdl).unwrap_or_else(|e| panic!("{e}"));
        Guard {
            limits,
            public_introspection,
            shapes,
            pages,
        }
    }

    pub fn limits(&self) -> &RequestLimits {
        &self.limits
    }

    /// Checks the size of an HTTP batch, before any of its operations.
    pub fn admit_batch(&self, operations: usize) -> Result<(), Refusal> {
        check(Limit::Batch, self.limits.batch, operations as u64)
    }

    /// Checks `request`'s document; when it passes, the request carries the
    /// parsed document and a fresh [`FetchBudget`].
    pub fn admit(&self, request: &mut Request, authenticated: bool) -> Result<Admitted, Refusal> {
        let admitted = self.check(request, authenticated);
        match &admitted {
            Ok(admitted) => {
                request.set_parsed_query(ExecutableDocument::clone(&admitted.document));
                request
                    .data
                    .insert(FetchBudget::new(self.limits.database_fetches));
                static COST: OnceLock<metrics::Histogram> = OnceLock::new();
                COST.get_or_init(|| metrics::histogram!("clacks_graphql_operation_cost"))
                    .record(admitted.cost as f64);
            }
            Err(refusal) => refusal.count(),
        }
        admitted
    }

    fn check(&self, request: &Request, authenticated: bool) -> Result<Admitted, Refusal> {
        let limits = &self.limits;
        let query = request.query.as_str();
        check(
            Limit::DocumentBytes,
            limits.document_bytes,
            query.len() as u64,
        )?;
        let scan = lexer::scan(query);
        check(Limit::Tokens, limits.tokens, scan.tokens)?;
        let nesting = scan.selection_nesting.max(scan.value_nesting);
        check(Limit::Depth, limits.depth, nesting)?;
        let document = documents::parsed(query).map_err(Refusal::Invalid)?;
        let measured = measure::measure(
            &document,
            &self.shapes,
            &request.variables,
            request.operation_name.as_deref(),
            self.pages,
        )
        .map_err(|cycle| {
            Refusal::Invalid(ServerError::new(
                format!("fragment `{}` spreads itself", cycle.0),
                None,
            ))
        })?;
        check(
            Limit::InlinedSelections,
            limits.inlined_selections,
            measured.inlined_selections,
        )?;
        for operation in &measured.operations {
            if operation.introspects && !authenticated && !self.public_introspection {
                return Err(Refusal::IntrospectionNeedsToken);
            }
            check(Limit::Aliases, limits.aliases, operation.aliases)?;
            check(Limit::Directives, limits.directives, operation.directives)?;
            check(Limit::Depth, limits.depth, operation.depth)?;
            check(Limit::RootFields, limits.root_fields, operation.root_fields)?;
            check(
                Limit::IntrospectionNesting,
                MAX_INTROSPECTION_NESTING,
                operation.introspection_nesting,
            )?;
            check(Limit::Cost, limits.cost, operation.cost)?;
        }
        Ok(Admitted {
            cost: measured.selected.map_or(0, |selected| selected.cost),
            document,
        })
    }
}

fn check(limit: Limit, max: u64, actual: u64) -> Result<(), Refusal> {
    if actual > max {
        return Err(Refusal::Limit { limit, max, actual });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use async_graphql::Variables;
    use async_graphql::parser::types::{BaseType, TypeKind, TypeSystemDefinition};
    use serde_json::json;

    use super::*;

    const PAGES: Pages = Pages {
        default: 50,
        max: 200,
    };

    fn guard() -> Guard {
        Guard::new(&crate::sdl(), RequestLimits::DEFAULT, false, PAGES)
    }

    fn admit(guard: &Guard, query: &str, variables: serde_json::Value) -> Result<u64, Refusal> {
        let mut request = Request::new(query).variables(Variables::from_json(variables));
        guard
            .admit(&mut request, true)
            .map(|admitted| admitted.cost)
    }

    fn refused_for(refusal: Refusal) -> (Limit, u64) {
        match refusal {
            Refusal::Limit { limit, actual, .. } => (limit, actual),
            other => panic!("refused for another reason: {other:?}"),
        }
    }

    #[test]
    fn every_list_field_declares_its_size() {
        let sdl = crate::sdl();
        let schema = async_graphql::parser::parse_schema(&sdl).unwrap();
        let mut lists = 0;
        for definition in &schema.definitions {
            let TypeSystemDefinition::Type(ty) = definition else {
                continue;
            };
            let TypeKind::Object(object) = &ty.node.kind else {
                continue;
            };
            for field in &object.fields {
                let field = &field.node;
                if matches!(field.ty.node.base, BaseType::List(_)) {
                    lists += 1;
                    assert!(
                        field
                            .directives
                            .iter()
                            .any(|d| d.node.name.node == "listSize"),
                        "{}.{} is a list without @listSize",
                        ty.node.name.node,
                        field.name.node
                    );
                }
            }
        }
        assert!(lists >= 10, "found only {lists} list fields");
    }

    /// The documents of the bundled clients (e2e/chat.test.mjs, clacks-bench,
    /// the explorer page, the README) and of introspection tools pass the
    /// default limits.
    #[test]
    fn known_clients_pass_the_defaults() {
        let guard = guard();
        let documents = [
            "subscription($c: ID) { message(channel: $c) { content sender { id } sent_at } }",
            "subscription($c: ID) { events(channel: $c) { __typename seq channelId
               ... on MessageCreated { message { content sender { id } } }
               ... on ReadReceipt { userId lastReadSeq } } }",
            "mutation($c: ID!) { createMessage(input: {content: \"hi\", channel: $c, clientMessageId: \"b-1\"}) { seq } }",
            "mutation($c: ID!) { markRead(channel: $c, seq: 2) { lastReadSeq unreadCount } }",
            "query($c: ID!) { channel(id: $c) { history(limit: 1) { seenBy { userId } } message_view(user_id: \"alice\", last: 0, count: 5) { seen } } }",
            "{ channels { id unreadCount lastReadSeq } unread_messages { content } }",
            "subscription($c: ID, $after: Int) { events(channel: $c, afterSeq: $after, kinds: [MESSAGE_CREATED]) { seq ... on MessageCreated { message { content } } } }",
            "query {
               me { id name }
               channels { id displayName unreadCount lastReadSeq lastMessage { seq content sentAt sender { id } } }
             }",
            "subscription ($resume: [ResumeInput!]) {
               events(resume: $resume) {
                 __typename channelId seq durable
                 ... on MessageCreated { message { id seq content sender { id } } }
                 ... on ReadReceipt { userId lastReadSeq }
               }
             }",
            "query($c: ID!) { channel(id: $c) { id displayName display_name lastSeq
                newest: history(limit: 2) { seq content }
                older: history(before: 4, limit: 2) { seq }
                after: history(after: 1, limit: 2) { seq }
                messages(last: \"4\", count: 2) { seq }
                recent: messages { seq }
                message_view(user_id: \"bob\", last: 0, count: 10) { order seen time user { id } message { content } }
                members { userId role lastReadSeq } users { id } } }",
            "{ channels { id displayName unreadCount lastMessage { id content sentAt sender { id } } members { userId role } } }",
            include_str!("../../testdata/introspection.graphql"),
            include_str!("../../testdata/introspection-full.graphql"),
        ];
        for document in documents {
            match admit(&guard, document, json!({"c": "1"})) {
                Ok(cost) => println!("cost {cost:>5}: {}", &document[..60.min(document.len())]),
                Err(refusal) => panic!("{refusal:?} for {document}"),
            }
        }
    }

    #[test]
    fn attacks_are_refused_before_the_engine_sees_them() {
        let guard = guard();
        let refused = |query: &str| refused_for(admit(&guard, query, json!({})).unwrap_err());
        // The fragment explosion (1.3 KB, 3.6 s of engine CPU).
        let mut explosion = String::from("query { ...A }");
        for (name, next) in [("A", "B"), ("B", "C"), ("C", "D"), ("D", "E")] {
            let spreads = format!("...{next} ").repeat(60);
            explosion.push_str(&format!(" fragment {name} on Query {{ {spreads}}}"));
        }
        explosion.push_str(" fragment E on Query { __typename }");
        let started = std::time::Instant::now();
        let (limit, actual) = refused(&explosion);
        println!(
            "fragment explosion ({} bytes) refused in {:?}",
            explosion.len(),
            started.elapsed()
        );
        assert_eq!(limit, Limit::InlinedSelections);
        assert!(actual > 12_000_000, "{actual}");

        let aliases: String = (0..16).map(|i| format!("a{i}: __typename ")).collect();
        assert_eq!(refused(&format!("{{ {aliases} }}")), (Limit::Aliases, 16));
        let directives = "__typename @skip(if: false) ".repeat(10);
        let (limit, _) = refused(&format!("{{ {} }}", directives.repeat(6)));
        assert_eq!(limit, Limit::Directives);
        let roots = "me { id } ".repeat(11);
        assert_eq!(refused(&format!("{{ {roots} }}")), (Limit::RootFields, 11));
        let nested = |levels: usize| format!("{}{}", "{ a ".repeat(levels), "}".repeat(levels));
        assert_eq!(refused(&nested(100_000)), (Limit::DocumentBytes, 500_000));
        assert_eq!(refused(&nested(3_000)), (Limit::Tokens, 9_000));
        assert_eq!(refused(&nested(600)), (Limit::Depth, 600));
        let lists = format!("{{ a(x: {}) }}", "[".repeat(1_000));
        assert_eq!(refused(&lists), (Limit::Depth, 1_001));
        let huge = format!("{{ me {{ id }} }} # {}", "x".repeat(40_000));
        assert_eq!(refused(&huge), (Limit::DocumentBytes, huge.len() as u64));
        let rows =
            "{ channels { history(limit: 200) { seenBy { userId } channel { id displayName } } } }";
        let (limit, actual) = refused(rows);
        assert_eq!(limit, Limit::Cost);
        // 10 + 50 channels × (10 + 200 messages × (10 + 50 + 10 + 2)).
        assert_eq!(actual, 10 + 50 * (10 + 200 * (10 + 50 + 10 + 2)));
        let cycle = admit(&guard, "{ ...A } fragment A on Query { ...A }", json!({}));
        assert!(matches!(cycle, Err(Refusal::Invalid(_))), "{cycle:?}");
        let walk =
            "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }";
        assert_eq!(refused(walk), (Limit::IntrospectionNesting, 3));
        assert_eq!(
            guard.admit_batch(11).map_err(refused_for),
            Err((Limit::Batch, 11))
        );
        assert!(guard.admit_batch(10).is_ok());
    }

    #[test]
    fn introspection_needs_a_token_unless_public() {
        let query = "{ __schema { queryType { name } } }";
        let closed = guard();
        let mut anonymous = Request::new(query);
        assert_eq!(
            closed.admit(&mut anonymous, false).unwrap_err(),
            Refusal::IntrospectionNeedsToken
        );
        let mut authenticated = Request::new(query);
        assert!(closed.admit(&mut authenticated, true).is_ok());
        let mut typename = Request::new("{ __typename }");
        assert!(closed.admit(&mut typename, false).is_ok());
        let open = Guard::new(&crate::sdl(), RequestLimits::DEFAULT, true, PAGES);
        let mut anonymous = Request::new(query);
        assert!(open.admit(&mut anonymous, false).is_ok());
    }

    #[test]
    fn an_admitted_request_carries_its_document_and_budget() {
        let guard = guard();
        let mut request = Request::new("{ me { id } }");
        let admitted = guard.admit(&mut request, true).unwrap();
        assert_eq!(admitted.cost, 2);
        assert!(request.parsed_query().is_ok());
        let budget = request.data.get(&std::any::TypeId::of::<FetchBudget>());
        assert!(budget.is_some());
    }

    #[test]
    fn the_fetch_budget_refuses_past_its_max() {
        let budget = FetchBudget::new(2);
        assert!(budget.charge().is_ok());
        assert!(budget.charge().is_ok());
        let refusal = budget.charge().unwrap_err();
        assert_eq!(
            refusal,
            Refusal::Limit {
                limit: Limit::DatabaseFetches,
                max: 2,
                actual: 3
            }
        );
        let error = refusal.into_server_error();
        let extensions = error.extensions.unwrap();
        assert_eq!(extensions.get("code"), Some(&"LIMIT_EXCEEDED".into()));
        assert_eq!(extensions.get("limit"), Some(&"databaseFetches".into()));
        assert_eq!(extensions.get("max"), Some(&2u64.into()));
        assert_eq!(extensions.get("actual"), Some(&3u64.into()));
    }
}
