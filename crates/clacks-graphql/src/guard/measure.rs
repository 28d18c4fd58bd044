//! Measures a parsed document as the engine will see it once its fragments
//! are inlined, in time linear in the document's length.
//!
//! Each fragment is measured once, after the fragments it spreads (taken in
//! dependency order, so nothing recurses from one fragment into another),
//! and a spread adds its fragment's measure. The engine's validation walks
//! every spread anew instead, so a few nested fragments that each spread
//! the next one 60 times cost it millions of visits; here they are four
//! multiplications. A fragment that spreads itself, directly or not, can
//! be inlined by no one: it is refused before anything else looks at it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::convert::Infallible;

use async_graphql::parser::types::{
    ExecutableDocument, Field, FragmentDefinition, OperationDefinition, Selection, SelectionSet,
};
use async_graphql::{Name, Value, Variables};

use super::shapes::{Shapes, Size};

/// Page sizes of the service's list fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pages {
    /// Rows of a list whose size argument is absent.
    pub default: u64,
    /// Most rows a list returns, whatever its size argument.
    pub max: u64,
}

/// What a selection set (or a whole operation) amounts to once inlined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Measure {
    /// Fields, fragment spreads and inline fragments.
    pub selections: u64,
    pub aliases: u64,
    pub directives: u64,
    /// Fields nested in fields.
    pub depth: u64,
    /// Fields at the top level (through fragments).
    pub root_fields: u64,
    /// Each field's weight, times the rows of the lists around it.
    pub cost: u64,
    /// Introspection lists that lead back to types, nested.
    pub introspection_nesting: u64,
    /// Whether the top level asks for `__schema` or `__type`.
    pub introspects: bool,
}

impl Measure {
    /// Adds what a fragment (spread or inline) brings to this level.
    fn include(&mut self, inner: &Measure) {
        self.selections = self.selections.saturating_add(inner.selections);
        self.aliases = self.aliases.saturating_add(inner.aliases);
        self.directives = self.directives.saturating_add(inner.directives);
        self.depth = self.depth.max(inner.depth);
        self.root_fields = self.root_fields.saturating_add(inner.root_fields);
        self.cost = self.cost.saturating_add(inner.cost);
        self.introspection_nesting = self.introspection_nesting.max(inner.introspection_nesting);
        self.introspects |= inner.introspects;
    }
}

#[derive(Debug)]
pub(super) struct DocumentMeasure {
    /// Selections of every operation and every fragment definition once
    /// inlined: what validation walks.
    pub inlined_selections: u64,
    pub operations: Vec<Measure>,
    /// The measure of the operation that will run, if one is chosen.
    pub selected: Option<Measure>,
}

/// A fragment that spreads itself, directly or through others.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct FragmentCycle(pub String);

pub(super) fn measure(
    document: &ExecutableDocument,
    shapes: &Shapes,
    variables: &Variables,
    operation_name: Option<&str>,
    pages: Pages,
) -> Result<DocumentMeasure, FragmentCycle> {
    let selected = selected_operation(document, operation_name);
    let mut walker = Walker {
        shapes,
        pages,
        variables,
        defaults: selected.map(variable_defaults).unwrap_or_default(),
        fragments: HashMap::with_capacity(document.fragments.len()),
    };
    let mut inlined_selections: u64 = 0;
    for (name, fragment) in fragments_in_dependency_order(document)? {
        let measure = walker.fragment(fragment);
        inlined_selections = inlined_selections.saturating_add(measure.selections);
        walker.fragments.insert(name, measure);
    }
    let mut operations = Vec::new();
    let mut selected_measure = None;
    for (_, operation) in document.operations.iter() {
        let measure = walker.operation(&operation.node);
        inlined_selections = inlined_selections.saturating_add(measure.selections);
        if selected.is_some_and(|s| std::ptr::eq(s, &operation.node)) {
            selected_measure = Some(measure);
        }
        operations.push(measure);
    }
    Ok(DocumentMeasure {
        inlined_selections,
        operations,
        selected: selected_measure,
    })
}

/// The operation the engine will run: the named one, or the only one.
fn selected_operation<'d>(
    document: &'d ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<&'d OperationDefinition> {
    let mut operations = document.operations.iter();
    match operation_name {
        Some(wanted) => operations
            .find(|(name, _)| name.is_some_and(|n| n.as_str() == wanted))
            .map(|(_, op)| &op.node),
        None => match (operations.next(), operations.next()) {
            (Some((_, only)), None) => Some(&only.node),
            _ => None,
        },
    }
}

fn variable_defaults(operation: &OperationDefinition) -> HashMap<&str, &Value> {
    operation
        .variable_definitions
        .iter()
        .filter_map(|definition| {
            let definition = &definition.node;
            let default = definition.default_value.as_ref()?;
            Some((definition.name.node.as_str(), &default.node))
        })
        .collect()
}

/// The fragment definitions, each after every fragment it spreads
/// (Kahn's algorithm: no recursion between fragments, and a cycle is what
/// is left over).
fn fragments_in_dependency_order(
    document: &ExecutableDocument,
) -> Result<Vec<(&str, &FragmentDefinition)>, FragmentCycle> {
    let mut waiting_on: HashMap<&str, usize> = HashMap::new();
    let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, fragment) in &document.fragments {
        let mut spreads = HashSet::new();
        spread_names(&fragment.node.selection_set.node, &mut spreads);
        spreads.retain(|spread| document.fragments.contains_key(*spread));
        waiting_on.insert(name.as_str(), spreads.len());
        for spread in spreads {
            dependents.entry(spread).or_default().push(name.as_str());
        }
    }
    let mut ready: Vec<&str> = waiting_on
        .iter()
        .filter(|(_, waiting)| **waiting == 0)
        .map(|(name, _)| *name)
        .collect();
    let mut order = Vec::with_capacity(document.fragments.len());
    while let Some(name) = ready.pop() {
        if let Some(fragment) = document.fragments.get(name) {
            order.push((name, &fragment.node));
        }
        for dependent in dependents.remove(name).unwrap_or_default() {
            if let Some(waiting) = waiting_on.get_mut(dependent) {
                *waiting -= 1;
                if *waiting == 0 {
                    ready.push(dependent);
                }
            }
        }
    }
    if order.len() < document.fragments.len() {
        let placed: HashSet<&str> = order.iter().map(|(name, _)| *name).collect();
        let in_cycle: BTreeSet<&str> = waiting_on
            .keys()
            .filter(|name| !placed.contains(*name))
            .copied()
            .collect();
        let first = in_cycle.first().copied().unwrap_or_default();
        return Err(FragmentCycle(first.to_owned()));
    }
    Ok(order)
}

/// Names of the fragments a selection set spreads (its own nesting only).
fn spread_names<'d>(selection_set: &'d SelectionSet, into: &mut HashSet<&'d str>) {
    for item in &selection_set.items {
        match &item.node {
            Selection::Field(field) => spread_names(&field.node.selection_set.node, into),
            Selection::InlineFragment(inline) => {
                spread_names(&inline.node.selection_set.node, into);
            }
            Selection::FragmentSpread(spread) => {
                into.insert(spread.node.fragment_name.node.as_str());
            }
        }
    }
}

struct Walker<'a> {
    shapes: &'a Shapes,
    pages: Pages,
    variables: &'a Variables,
    defaults: HashMap<&'a str, &'a Value>,
    fragments: HashMap<&'a str, Measure>,
}

impl<'a> Walker<'a> {
    fn operation(&self, operation: &OperationDefinition) -> Measure {
        let root = self.shapes.root(operation.ty);
        let mut measure = self.selection_set(&operation.selection_set.node, root);
        let variable_directives: usize = operation
            .variable_definitions
            .iter()
            .map(|definition| definition.node.directives.len())
            .sum();
        measure.directives = measure
            .directives
            .saturating_add((operation.directives.len() + variable_directives) as u64);
        measure
    }

    fn fragment(&self, fragment: &FragmentDefinition) -> Measure {
        let on = fragment.type_condition.node.on.node.as_str();
        let mut measure = self.selection_set(&fragment.selection_set.node, Some(on));
        measure.directives = measure
            .directives
            .saturating_add(fragment.directives.len() as u64);
        measure
    }

    /// Recurses only into the set's own nesting, which the parser bounds
    /// (and the guard's depth check before it); spreads are looked up.
    fn selection_set(&self, selection_set: &SelectionSet, parent: Option<&str>) -> Measure {
        let mut measure = Measure::default();
        for item in &selection_set.items {
            match &item.node {
                Selection::Field(field) => self.field(&field.node, parent, &mut measure),
                Selection::InlineFragment(inline) => {
                    let inline = &inline.node;
                    let on = inline
                        .type_condition
                        .as_ref()
                        .map_or(parent, |condition| Some(condition.node.on.node.as_str()));
                    let inner = self.selection_set(&inline.selection_set.node, on);
                    measure.selections = measure.selections.saturating_add(1);
                    measure.directives = measure
                        .directives
                        .saturating_add(inline.directives.len() as u64);
                    measure.include(&inner);
                }
                Selection::FragmentSpread(spread) => {
                    let spread = &spread.node;
                    // An unknown fragment fails validation; it adds nothing.
                    let inner = self
                        .fragments
                        .get(spread.fragment_name.node.as_str())
                        .copied()
                        .unwrap_or_default();
                    measure.selections = measure.selections.saturating_add(1);
                    measure.directives = measure
                        .directives
                        .saturating_add(spread.directives.len() as u64);
                    measure.include(&inner);
                }
            }
        }
        measure
    }

    fn field(&self, field: &Field, parent: Option<&str>, measure: &mut Measure) {
        let name = field.name.node.as_str();
        // Unknown fields (and `__typename`) count as plain fields.
        let shape = self.shapes.field(parent, name);
        let child = self.selection_set(
            &field.selection_set.node,
            shape.map(|shape| shape.result.as_str()),
        );
        let (weight, rows, recursive_list) = match shape {
            None => (1, 1, false),
            Some(shape) => match &shape.size {
                Size::One => (shape.weight, 1, false),
                Size::Schema { recursive } => (shape.weight, 1, *recursive),
                Size::Rows { assumed, slicing } => {
                    (shape.weight, self.rows(field, *assumed, slicing), false)
                }
            },
        };
        measure.selections = measure
            .selections
            .saturating_add(1)
            .saturating_add(child.selections);
        measure.aliases = measure
            .aliases
            .saturating_add(u64::from(field.alias.is_some()))
            .saturating_add(child.aliases);
        measure.directives = measure
            .directives
            .saturating_add(field.directives.len() as u64)
            .saturating_add(child.directives);
        measure.depth = measure.depth.max(child.depth.saturating_add(1));
        measure.root_fields = measure.root_fields.saturating_add(1);
        measure.cost = measure
            .cost
            .saturating_add(weight.saturating_add(rows.saturating_mul(child.cost)));
        measure.introspection_nesting = measure
            .introspection_nesting
            .max(child.introspection_nesting + u64::from(recursive_list));
        measure.introspects |=
            matches!(name, "__schema" | "__type") && self.shapes.is_query_root(parent);
    }

    /// Rows a list field returns: its first size argument given, clamped
    /// as the service clamps it, else its assumed size, else a default page.
    fn rows(&self, field: &Field, assumed: Option<u64>, slicing: &[String]) -> u64 {
        slicing
            .iter()
            .filter_map(|name| field.get_argument(name))
            .find_map(|written| {
                let value = written
                    .node
                    .clone()
                    .into_const_with(|name| {
                        Ok::<_, Infallible>(self.variable(&name).cloned().unwrap_or(Value::Null))
                    })
                    .unwrap_or(Value::Null);
                self.requested_rows(value)
            })
            .unwrap_or_else(|| assumed.unwrap_or(self.pages.default))
    }

    /// `None` when the argument is null or an unset variable (the service
    /// then uses its default); anything but an integer counts as the largest
    /// page (validation refuses it anyway).
    fn requested_rows(&self, value: Value) -> Option<u64> {
        match value {
            Value::Null => None,
            Value::Number(number) => Some(match number.as_i64() {
                Some(rows) => u64::try_from(rows).unwrap_or(0).clamp(1, self.pages.max),
                None => self.pages.max,
            }),
            _ => Some(self.pages.max),
        }
    }

    fn variable(&self, name: &Name) -> Option<&Value> {
        self.variables
            .get(name)
            .or_else(|| self.defaults.get(name.as_str()).copied())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SDL: &str = "
        type Query {
          me: User
          channels: [Channel!]! @cost(weight: 10) @listSize(assumedSize: 50)
          channel(id: ID!): Channel @cost(weight: 10)
        }
        type Channel {
          id: ID!
          history(limit: Int): [Message!]! @cost(weight: 10) @listSize(slicingArguments: [\"limit\"])
        }
        type Message { id: ID! seenBy: [User!]! @cost(weight: 10) @listSize(assumedSize: 50) }
        type User { id: ID! }
    ";
    const PAGES: Pages = Pages {
        default: 50,
        max: 200,
    };

    fn measured(
        query: &str,
        variables: serde_json::Value,
    ) -> Result<DocumentMeasure, FragmentCycle> {
        let shapes = Shapes::from_sdl(SDL).unwrap();
        let document = async_graphql::parser::parse_query(query).unwrap();
        let variables = Variables::from_json(variables);
        measure(&document, &shapes, &variables, None, PAGES)
    }

    fn selected(query: &str) -> Measure {
        measured(query, serde_json::json!({}))
            .unwrap()
            .selected
            .unwrap()
    }

    #[test]
    fn counts_each_kind_of_thing() {
        let m = selected(
            "query @a { a: me { id } b: me @x { id @y } ...F ... on Query @z { me { id } } }
             fragment F on Query { c: me { id } }",
        );
        assert_eq!(m.aliases, 3);
        assert_eq!(m.directives, 4);
        assert_eq!(m.depth, 2);
        assert_eq!(m.root_fields, 4);
        // 4 `me`, 4 `id`, the spread and the inline fragment.
        assert_eq!(m.selections, 10);
        assert!(!m.introspects);
    }

    #[test]
    fn inlined_size_is_computed_once_per_fragment() {
        // The exploit: five levels of fragments, each spreading the
        // next one 60 times, is 60^4 = 12,960,000 `__typename`s inlined.
        let mut query = String::from("query { ...A }");
        let names = ["A", "B", "C", "D", "E"];
        for pair in names.windows(2) {
            let spreads = format!("...{} ", pair[1]).repeat(60);
            query.push_str(&format!(" fragment {} on Query {{ {spreads} }}", pair[0]));
        }
        query.push_str(" fragment E on Query { __typename }");
        let started = std::time::Instant::now();
        let document = measured(&query, serde_json::json!({})).unwrap();
        println!("measured in {:?}", started.elapsed());
        let e = 1;
        let d = 60 * (1 + e);
        let c = 60 * (1 + d);
        let b = 60 * (1 + c);
        let a = 60 * (1 + b);
        let operation = 1 + a;
        assert_eq!(document.selected.unwrap().selections, operation);
        assert_eq!(document.inlined_selections, operation + a + b + c + d + e);
        assert_eq!(document.selected.unwrap().cost, 60u64.pow(4));
    }

    #[test]
    fn cycles_are_found_without_recursing() {
        assert_eq!(
            measured(
                "{ ...A } fragment A on Query { ...B } fragment B on Query { me { ...A } }",
                serde_json::json!({})
            )
            .unwrap_err(),
            FragmentCycle("A".into())
        );
        assert_eq!(
            measured(
                "{ ...S } fragment S on Query { ...S }",
                serde_json::json!({})
            )
            .unwrap_err(),
            FragmentCycle("S".into())
        );
        // A long chain is no cycle, and measures without deep recursion.
        let mut chain = String::from("{ ...F0 }");
        for i in 0..2000 {
            chain.push_str(&format!(" fragment F{i} on Query {{ ...F{} }}", i + 1));
        }
        chain.push_str(" fragment F2000 on Query { me { id } }");
        let m = measured(&chain, serde_json::json!({}))
            .unwrap()
            .selected
            .unwrap();
        assert_eq!(m.depth, 2);
        assert_eq!(m.root_fields, 1);
    }

    #[test]
    fn unknown_fragments_and_fields_count_as_plain() {
        let m = selected("{ ...Missing nope { deeper } }");
        assert_eq!((m.selections, m.cost, m.depth), (3, 2, 2));
    }

    #[test]
    fn cost_multiplies_by_the_rows_a_list_returns() {
        // channels: 10 + 50 × (history: 10 + limit × (id + seenBy: 10 + 50 × 1)).
        let cost =
            |query: &str, variables| measured(query, variables).unwrap().selected.unwrap().cost;
        let per_message = 1 + 10 + 50;
        let query = "query($n: Int) { channels { history(limit: $n) { id seenBy { id } } } }";
        assert_eq!(
            cost(query, serde_json::json!({"n": 2})),
            10 + 50 * (10 + 2 * per_message)
        );
        assert_eq!(
            cost(query, serde_json::json!({})),
            10 + 50 * (10 + 50 * per_message),
            "an unset variable means the default page"
        );
        assert_eq!(
            cost(query, serde_json::json!({"n": 100_000})),
            10 + 50 * (10 + 200 * per_message),
            "clamped to the largest page, as the service does"
        );
        assert_eq!(
            cost(query, serde_json::json!({"n": -5})),
            10 + 50 * (10 + per_message)
        );
        assert_eq!(
            cost(
                "query($n: Int = 3) { channel(id: 1) { history(limit: $n) { id } } }",
                serde_json::json!({})
            ),
            10 + 10 + 3,
            "a variable's default applies"
        );
        assert_eq!(
            cost(
                "{ channel(id: 1) { history(limit: \"x\") { id } } }",
                serde_json::json!({})
            ),
            10 + 10 + 200
        );
    }

    #[test]
    fn introspection_counts_once_and_its_cycles_are_measured() {
        let m = selected("{ __schema { types { name fields { name } } } }");
        assert!(m.introspects);
        // __schema, types (weighted for the whole schema it returns), name,
        // fields, name: a list as long as the schema counts once.
        assert_eq!(m.cost, 1 + 1_000 + 1 + 1 + 1);
        assert_eq!(m.introspection_nesting, 1);
        let m = selected(
            "{ __type(name: \"Query\") { fields { type { fields { type { interfaces { name } } } } } } }",
        );
        assert_eq!(m.introspection_nesting, 3);
        let m = selected("{ ...I } fragment I on Query { __schema { queryType { name } } }");
        assert!(m.introspects, "through a fragment");
        assert!(!selected("{ me { __typename } }").introspects);
    }

    #[test]
    fn every_operation_is_measured_and_the_named_one_selected() {
        let shapes = Shapes::from_sdl(SDL).unwrap();
        let document =
            async_graphql::parser::parse_query("query A { me { id } } query B { channels { id } }")
                .unwrap();
        let variables = Variables::default();
        let both = measure(&document, &shapes, &variables, Some("B"), PAGES).unwrap();
        assert_eq!(both.operations.len(), 2);
        assert_eq!(both.selected.unwrap().cost, 10 + 50);
        let none = measure(&document, &shapes, &variables, None, PAGES).unwrap();
        assert!(none.selected.is_none());
        assert_eq!(none.inlined_selections, 4);
    }
}
