//! Checks that a served schema still accepts everything an original one
//! did (the v0 schema is Clacks' compatibility contract). Used by tests.
//!
//! Rules: every original type exists with the same kind; every original
//! field exists with an output type at least as strict (non-null may
//! replace nullable, never the reverse); every original argument and input
//! field exists with an input type at least as lenient; arguments and
//! input fields the original did not have must be optional. Exceptions
//! are named `Type.field` and skip the field's type check (the arguments
//! are still checked).

use std::collections::HashMap;

use async_graphql::parser::parse_schema;
use async_graphql::parser::types::{
    BaseType, FieldDefinition, InputValueDefinition, Type, TypeKind, TypeSystemDefinition,
};

struct Fields<'a> {
    kind: &'static str,
    fields: HashMap<&'a str, &'a FieldDefinition>,
    inputs: HashMap<&'a str, &'a InputValueDefinition>,
}

fn index(doc: &async_graphql::parser::types::ServiceDocument) -> HashMap<&str, Fields<'_>> {
    let mut types = HashMap::new();
    for definition in &doc.definitions {
        let TypeSystemDefinition::Type(ty) = definition else {
            continue;
        };
        let ty = &ty.node;
        let mut entry = Fields {
            kind: "scalar",
            fields: HashMap::new(),
            inputs: HashMap::new(),
        };
        match &ty.kind {
            TypeKind::Object(o) => {
                entry.kind = "object";
                entry.fields = o
                    .fields
                    .iter()
                    .map(|f| (f.node.name.node.as_str(), &f.node))
                    .collect();
            }
            TypeKind::Interface(i) => {
                entry.kind = "interface";
                entry.fields = i
                    .fields
                    .iter()
                    .map(|f| (f.node.name.node.as_str(), &f.node))
                    .collect();
            }
            TypeKind::InputObject(i) => {
                entry.kind = "input";
                entry.inputs = i
                    .fields
                    .iter()
                    .map(|f| (f.node.name.node.as_str(), &f.node))
                    .collect();
            }
            TypeKind::Union(_) => entry.kind = "union",
            TypeKind::Enum(_) => entry.kind = "enum",
            TypeKind::Scalar => {}
        }
        types.insert(ty.name.node.as_str(), entry);
    }
    types
}

/// Served output type `served` may stand where `original` was promised.
fn output_ok(original: &Type, served: &Type) -> bool {
    if !original.nullable && served.nullable {
        return false;
    }
    match (&original.base, &served.base) {
        (BaseType::Named(a), BaseType::Named(b)) => a == b,
        (BaseType::List(a), BaseType::List(b)) => output_ok(a, b),
        _ => false,
    }
}

/// Served input type `served` accepts every value `original` accepted.
fn input_ok(original: &Type, served: &Type) -> bool {
    if original.nullable && !served.nullable {
        return false;
    }
    match (&original.base, &served.base) {
        (BaseType::Named(a), BaseType::Named(b)) => a == b,
        (BaseType::List(a), BaseType::List(b)) => input_ok(a, b),
        _ => false,
    }
}

fn check_inputs(
    place: &str,
    original: &[&InputValueDefinition],
    served: &[&InputValueDefinition],
    problems: &mut Vec<String>,
) {
    for o in original {
        let name = o.name.node.as_str();
        match served.iter().find(|s| s.name.node.as_str() == name) {
            None => problems.push(format!("{place}: argument or field `{name}` is missing")),
            Some(s) if !input_ok(&o.ty.node, &s.ty.node) => problems.push(format!(
                "{place}: `{name}` is `{}` but the original accepted `{}`",
                s.ty.node, o.ty.node
            )),
            Some(_) => {}
        }
    }
    for s in served {
        let name = s.name.node.as_str();
        let new = !original.iter().any(|o| o.name.node.as_str() == name);
        if new && !s.ty.node.nullable && s.default_value.is_none() {
            problems.push(format!("{place}: new `{name}` must be optional"));
        }
    }
}

/// What in `served_sdl` breaks a client of `original_sdl` (empty: none).
pub fn incompatibilities(
    original_sdl: &str,
    served_sdl: &str,
    exceptions: &[&str],
) -> Result<Vec<String>, String> {
    let original = parse_schema(original_sdl).map_err(|e| format!("original SDL: {e}"))?;
    let served = parse_schema(served_sdl).map_err(|e| format!("served SDL: {e}"))?;
    let original = index(&original);
    let served = index(&served);
    let mut problems = Vec::new();
    let mut names: Vec<&&str> = original.keys().collect();
    names.sort();
    for type_name in names {
        let o = &original[*type_name];
        let Some(s) = served.get(*type_name) else {
            problems.push(format!("type `{type_name}` is missing"));
            continue;
        };
        if o.kind != s.kind {
            problems.push(format!(
                "type `{type_name}` is a {} (was a {})",
                s.kind, o.kind
            ));
            continue;
        }
        for (field_name, of) in &o.fields {
            let place = format!("{type_name}.{field_name}");
            let Some(sf) = s.fields.get(field_name) else {
                problems.push(format!("field `{place}` is missing"));
                continue;
            };
            if !exceptions.contains(&place.as_str()) && !output_ok(&of.ty.node, &sf.ty.node) {
                problems.push(format!(
                    "field `{place}` is `{}` but the original promised `{}`",
                    sf.ty.node, of.ty.node
                ));
            }
            let oa: Vec<_> = of.arguments.iter().map(|a| &a.node).collect();
            let sa: Vec<_> = sf.arguments.iter().map(|a| &a.node).collect();
            check_inputs(&place, &oa, &sa, &mut problems);
        }
        let oi: Vec<_> = o.inputs.values().copied().collect();
        let si: Vec<_> = s.inputs.values().copied().collect();
        check_inputs(type_name, &oi, &si, &mut problems);
    }
    Ok(problems)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn detects_breaking_changes() {
        let original = "type Q { a(x: Int!): String b: Int! }";
        assert!(
            incompatibilities(
                original,
                "type Q { a(x: Int, y: Int): String! b: Int! }",
                &[]
            )
            .unwrap()
            .is_empty()
        );
        let broken = incompatibilities(
            original,
            "type Q { a(x: Int!, y: Int!): String b: Int }",
            &[],
        )
        .unwrap();
        assert_eq!(broken.len(), 2, "{broken:?}");
        let missing = incompatibilities(original, "type Q { a: String b: Int! }", &[]).unwrap();
        assert_eq!(missing.len(), 1, "{missing:?}");
    }
}
