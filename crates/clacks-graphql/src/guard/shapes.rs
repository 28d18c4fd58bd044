//! What the guard knows of the served schema, read once from its SDL: for
//! each type, each field's result type, whether it is a list and what it
//! costs (`@cost` and `@listSize`, declared on the resolvers in
//! `schema.rs` and published in `schema.graphql`). The guard runs before
//! validation, so it looks fields up by name and treats an unknown one as a
//! plain field; the validator rejects it afterwards.

use std::collections::HashMap;

use async_graphql::Value;
use async_graphql::parser::types::{
    BaseType, ConstDirective, FieldDefinition, OperationType, SchemaDefinition, TypeKind,
    TypeSystemDefinition,
};

/// The introspection types of the GraphQL specification: not part of the
/// served SDL, but selectable under `__schema` and `__type`.
///
/// `__Schema.types` is the one selection whose answer grows with the whole
/// schema (about 50 KB for a full introspection query today), while its
/// rows cost nothing in the guard's model (a list as long as the schema
/// counts once). Its weight makes it pay for what it allocates: an
/// operation holds at most 9 of them (the cost limit), and a user's query
/// budget (2,000 units a second, 20,000 at once by default) about 20 at
/// once and 2 a second after, instead of the 100 a batch could ask for.
/// One full introspection, what GraphiQL and code generators send, stays
/// well inside every limit.
const INTROSPECTION_SDL: &str = r#"
type __Schema {
  description: String
  types: [__Type!]! @cost(weight: 1000)
  queryType: __Type!
  mutationType: __Type
  subscriptionType: __Type
  directives: [__Directive!]!
}
type __Type {
  kind: __TypeKind!
  name: String
  description: String
  specifiedByURL: String
  fields(includeDeprecated: Boolean = false): [__Field!]
  interfaces: [__Type!]
  possibleTypes: [__Type!]
  enumValues(includeDeprecated: Boolean = false): [__EnumValue!]
  inputFields(includeDeprecated: Boolean = false): [__InputValue!]
  ofType: __Type
  isOneOf: Boolean
}
type __Field {
  name: String!
  description: String
  args(includeDeprecated: Boolean = false): [__InputValue!]!
  type: __Type!
  isDeprecated: Boolean!
  deprecationReason: String
}
type __InputValue {
  name: String!
  description: String
  type: __Type!
  defaultValue: String
  isDeprecated: Boolean!
  deprecationReason: String
}
type __EnumValue {
  name: String!
  description: String
  isDeprecated: Boolean!
  deprecationReason: String
}
type __Directive {
  name: String!
  description: String
  locations: [__DirectiveLocation!]!
  args(includeDeprecated: Boolean = false): [__InputValue!]!
  isRepeatable: Boolean!
}
type __IntrospectionRoot {
  __schema: __Schema!
  __type(name: String!): __Type
}
"#;

/// Introspection lists that lead back to `__Type`, so that a selection can
/// nest them to walk the schema over and over; graphql-js refuses them
/// nested 3 deep (its `MaxIntrospectionDepthRule`), and so does the guard.
const RECURSIVE_INTROSPECTION_LISTS: [&str; 4] =
    ["fields", "interfaces", "possibleTypes", "inputFields"];

#[derive(Debug)]
pub(super) struct Shapes {
    types: HashMap<String, HashMap<String, FieldShape>>,
    query: String,
    mutation: Option<String>,
    subscription: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FieldShape {
    /// The named type of the field's values.
    pub result: String,
    /// Cost of resolving it once (`@cost(weight:)`, 1 when not declared).
    pub weight: u64,
    pub size: Size,
}

/// How many values one resolution of a field yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Size {
    One,
    /// A list of rows: the first of `slicing` given (clamped to the
    /// largest page), else `assumed`, else the default page.
    Rows {
        assumed: Option<u64>,
        slicing: Vec<String>,
    },
    /// An introspection list: as long as the schema, whatever the data.
    Schema {
        recursive: bool,
    },
}

impl Shapes {
    /// Reads the served schema's SDL; fails only on an SDL that does not
    /// parse, which would be a bug in the schema, never a client's doing.
    pub fn from_sdl(served: &str) -> Result<Shapes, String> {
        let mut shapes = Shapes {
            types: HashMap::new(),
            query: "Query".to_owned(),
            mutation: None,
            subscription: None,
        };
        shapes.read(served, false)?;
        shapes.read(INTROSPECTION_SDL, true)?;
        if let Some(root) = shapes.types.remove("__IntrospectionRoot") {
            shapes
                .types
                .entry(shapes.query.clone())
                .or_default()
                .extend(root);
        }
        Ok(shapes)
    }

    fn read(&mut self, sdl: &str, introspection: bool) -> Result<(), String> {
        let document = async_graphql::parser::parse_schema(sdl)
            .map_err(|e| format!("the schema's SDL does not parse: {e}"))?;
        for definition in document.definitions {
            match definition {
                TypeSystemDefinition::Schema(schema) => self.set_roots(&schema.node),
                TypeSystemDefinition::Type(ty) => {
                    let fields = match &ty.node.kind {
                        TypeKind::Object(object) => &object.fields,
                        TypeKind::Interface(interface) => &interface.fields,
                        _ => continue,
                    };
                    let shapes = fields
                        .iter()
                        .map(|field| {
                            let field = &field.node;
                            (
                                field.name.node.to_string(),
                                field_shape(field, introspection),
                            )
                        })
                        .collect();
                    self.types.insert(ty.node.name.node.to_string(), shapes);
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        Ok(())
    }

    fn set_roots(&mut self, schema: &SchemaDefinition) {
        if let Some(query) = &schema.query {
            self.query = query.node.to_string();
        }
        self.mutation = schema.mutation.as_ref().map(|m| m.node.to_string());
        self.subscription = schema.subscription.as_ref().map(|s| s.node.to_string());
    }

    /// The root type of an operation, if the schema has one.
    pub fn root(&self, operation: OperationType) -> Option<&str> {
        match operation {
            OperationType::Query => Some(&self.query),
            OperationType::Mutation => self.mutation.as_deref(),
            OperationType::Subscription => self.subscription.as_deref(),
        }
    }

    pub fn is_query_root(&self, ty: Option<&str>) -> bool {
        ty == Some(self.query.as_str())
    }

    pub fn field(&self, parent: Option<&str>, name: &str) -> Option<&FieldShape> {
        self.types.get(parent?)?.get(name)
    }
}

fn field_shape(field: &FieldDefinition, introspection: bool) -> FieldShape {
    let list = matches!(field.ty.node.base, BaseType::List(_));
    let mut base = &field.ty.node.base;
    while let BaseType::List(inner) = base {
        base = &inner.base;
    }
    let result = match base {
        BaseType::Named(name) => name.to_string(),
        BaseType::List(_) => String::new(),
    };
    let directive = |name: &str| {
        field
            .directives
            .iter()
            .map(|d| &d.node)
            .find(|d| d.name.node == name)
    };
    let weight = directive("cost")
        .and_then(|cost| int_argument(cost, "weight"))
        .unwrap_or(1);
    let size = if !list {
        Size::One
    } else if introspection {
        Size::Schema {
            recursive: RECURSIVE_INTROSPECTION_LISTS.contains(&field.name.node.as_str()),
        }
    } else {
        let list_size = directive("listSize");
        Size::Rows {
            assumed: list_size.and_then(|d| int_argument(d, "assumedSize")),
            slicing: list_size
                .and_then(|d| d.get_argument("slicingArguments"))
                .map(|names| match &names.node {
                    Value::List(names) => names
                        .iter()
                        .filter_map(|name| match name {
                            Value::String(name) => Some(name.clone()),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                })
                .unwrap_or_default(),
        }
    };
    FieldShape {
        result,
        weight,
        size,
    }
}

fn int_argument(directive: &ConstDirective, name: &str) -> Option<u64> {
    match &directive.get_argument(name)?.node {
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_costs_lists_and_roots() {
        let shapes = Shapes::from_sdl(
            "type Q {
               items(first: Int): [Item!]! @cost(weight: 10) @listSize(slicingArguments: [\"first\"])
               tags: [String] @listSize(assumedSize: 5)
               one: Item
             }
             type Item { id: ID! }
             schema { query: Q }",
        )
        .unwrap();
        assert_eq!(shapes.root(OperationType::Query), Some("Q"));
        assert_eq!(shapes.root(OperationType::Mutation), None);
        let items = shapes.field(Some("Q"), "items").unwrap();
        assert_eq!(items.weight, 10);
        assert_eq!(items.result, "Item");
        assert_eq!(
            items.size,
            Size::Rows {
                assumed: None,
                slicing: vec!["first".into()]
            }
        );
        let tags = shapes.field(Some("Q"), "tags").unwrap();
        assert_eq!((tags.weight, tags.result.as_str()), (1, "String"));
        assert_eq!(
            tags.size,
            Size::Rows {
                assumed: Some(5),
                slicing: vec![]
            }
        );
        assert_eq!(shapes.field(Some("Q"), "one").unwrap().size, Size::One);
        assert!(shapes.field(Some("Q"), "nope").is_none());
        assert!(shapes.field(None, "items").is_none());
    }

    #[test]
    fn introspection_hangs_off_the_query_root() {
        let shapes = Shapes::from_sdl("type Query { a: Int }").unwrap();
        let schema = shapes.field(Some("Query"), "__schema").unwrap();
        assert_eq!(schema.result, "__Schema");
        let fields = shapes.field(Some("__Type"), "fields").unwrap();
        assert_eq!(fields.size, Size::Schema { recursive: true });
        let types = shapes.field(Some("__Schema"), "types").unwrap();
        assert_eq!(types.size, Size::Schema { recursive: false });
    }
}
