//! From YAML text to a JSON tree plus an index of where each field was written.
//!
//! The typed model is deserialized from the JSON tree; every later error carries a field path, and the
//! index turns that path back into `line:column` of the file. `$VAR` expansion happens here too, while
//! each string's path is known.

use std::collections::HashMap;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

use crate::base::diagnostic::{ConfigError, Location};

/// A parsed config document.
pub struct Source {
    pub value: Value,
    index: HashMap<String, Location>,
}

impl Source {
    /// Where `path` was written; falls back to the nearest enclosing field that the file has.
    pub fn locate(&self, path: &str) -> Option<Location> {
        let mut path = path;
        loop {
            if let Some(location) = self.index.get(path) {
                return Some(*location);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

/// Parses `text`, expanding `$VAR` references with `env`.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Source, Vec<ConfigError>> {
    parse_with(text, Some(env))
}

/// Parses a YAML or JSON document that is not Portico's config (an OpenAPI schema): no `$VAR`
/// expansion, since `$` is ordinary text there. The error says where the document is malformed.
pub fn parse_document(text: &str) -> Result<Value, String> {
    parse_with(text, None).map(|s| s.value).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn parse_with(text: &str, env: Option<Env<'_>>) -> Result<Source, Vec<ConfigError>> {
    let docs = MarkedYaml::load_from_str(text).map_err(|e| {
        let marker = e.marker();
        vec![ConfigError::new("", e.info().to_string()).at(Location {
            line: marker.line(),
            column: marker.col() + 1,
        })]
    })?;
    let Some(doc) = docs.into_iter().next() else {
        return Ok(Source {
            value: Value::Object(Map::new()),
            index: HashMap::new(),
        });
    };
    let mut builder = Builder {
        index: HashMap::new(),
        errors: Vec::new(),
        env,
    };
    let value = builder.node(&doc, String::new());
    if builder.errors.is_empty() {
        Ok(Source {
            value,
            index: builder.index,
        })
    } else {
        Err(builder.errors)
    }
}

struct Builder<'a> {
    index: HashMap<String, Location>,
    errors: Vec<ConfigError>,
    /// `None`: strings are kept as written.
    env: Option<Env<'a>>,
}

/// Looks up an environment variable (tests pass their own).
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn location_of(node: &MarkedYaml) -> Location {
    Location {
        line: node.span.start.line(),
        column: node.span.start.col() + 1,
    }
}

impl Builder<'_> {
    fn node(&mut self, node: &MarkedYaml, path: String) -> Value {
        self.index.entry(path.clone()).or_insert(location_of(node));
        match &node.data {
            YamlData::Value(scalar) => self.scalar(scalar, &path, node),
            YamlData::Representation(text, _, _) => Value::String(text.to_string()),
            YamlData::Sequence(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.node(item, format!("{path}[{i}]")))
                    .collect(),
            ),
            YamlData::Mapping(map) => {
                let mut object = Map::new();
                for (key, value) in map {
                    let Some(name) = scalar_key(key) else {
                        self.errors.push(
                            ConfigError::new(&path, "mapping keys must be strings")
                                .at(location_of(key)),
                        );
                        continue;
                    };
                    let child = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{path}.{name}")
                    };
                    self.index.insert(child.clone(), location_of(key));
                    let value = self.node(value, child);
                    object.insert(name, value);
                }
                Value::Object(object)
            }
            YamlData::Tagged(_, inner) => self.node(inner, path),
            YamlData::Alias(_) | YamlData::BadValue => {
                self.errors.push(
                    ConfigError::new(&path, "YAML aliases and bad values are not supported")
                        .at(location_of(node)),
                );
                Value::Null
            }
        }
    }

    fn scalar(&mut self, scalar: &Scalar, path: &str, node: &MarkedYaml) -> Value {
        match scalar {
            Scalar::Null => Value::Null,
            Scalar::Boolean(b) => Value::Bool(*b),
            Scalar::Integer(i) => Value::Number((*i).into()),
            Scalar::FloatingPoint(f) => {
                Number::from_f64(f.into_inner()).map_or(Value::Null, Value::Number)
            }
            Scalar::String(s) => match self.env.map_or(Ok(s.to_string()), |env| expand_env(s, env))
            {
                Ok(expanded) => Value::String(expanded),
                Err(message) => {
                    self.errors.push(
                        ConfigError::new(path, message)
                            .at(location_of(node))
                            .hint("export the variable, or write `$$` for a literal `$`"),
                    );
                    Value::String(String::new())
                }
            },
        }
    }
}

fn scalar_key(node: &MarkedYaml) -> Option<String> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
        YamlData::Value(Scalar::Integer(i)) => Some(i.to_string()),
        YamlData::Value(Scalar::Boolean(b)) => Some(b.to_string()),
        _ => None,
    }
}

/// Expands `$NAME` and `${NAME}`; `$$` is a literal `$`, and a `$` not followed by a name stays as is.
pub fn expand_env(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !input.contains('$') {
        return Ok(input.to_string());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => return Err(format!("unterminated `${{` in {input:?}")),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        let is_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
        if !is_name {
            out.push('$');
            rest = after;
            continue;
        }
        match env(name) {
            Some(value) => out.push_str(&value),
            None => return Err(format!("environment variable `{name}` is not set")),
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "KEY").then(|| "s3cret".to_string())
    }

    #[test]
    fn expands_both_forms_and_keeps_literals() {
        assert_eq!(expand_env("$KEY", &env).unwrap(), "s3cret");
        assert_eq!(expand_env("a-${KEY}-b", &env).unwrap(), "a-s3cret-b");
        assert_eq!(expand_env("cost $$5", &env).unwrap(), "cost $5");
        assert_eq!(expand_env("^/mcp$", &env).unwrap(), "^/mcp$");
        assert_eq!(expand_env("$1", &env).unwrap(), "$1");
    }

    #[test]
    fn unset_variable_is_an_error_naming_it() {
        let err = expand_env("Bearer $MISSING", &env).unwrap_err();
        assert!(err.contains("`MISSING`"), "{err}");
    }

    #[test]
    fn index_points_at_keys_and_items() {
        let text = "binds:\n- port: 3000\n  listeners: []\n";
        let source = parse(text, &env).unwrap();
        assert_eq!(
            source.locate("binds[0].port"),
            Some(Location { line: 2, column: 3 })
        );
        assert_eq!(
            source.locate("binds[0].listeners[4].x"),
            Some(Location { line: 3, column: 3 })
        );
    }
}
