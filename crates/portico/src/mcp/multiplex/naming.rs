//! How multiplexed names look: tools and prompts `<target>_<name>`, resource URIs `<target>+<uri>`.
//! Target names cannot contain either separator, so splitting at the first one is unambiguous.

use serde_json::Value;

/// The kinds of things a target lists, and how each is named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListKind {
    pub fn from_method(method: &str) -> Option<Self> {
        Some(match method {
            "tools/list" => Self::Tools,
            "prompts/list" => Self::Prompts,
            "resources/list" => Self::Resources,
            "resources/templates/list" => Self::ResourceTemplates,
            _ => return None,
        })
    }

    pub fn method(self) -> &'static str {
        match self {
            Self::Tools => "tools/list",
            Self::Prompts => "prompts/list",
            Self::Resources => "resources/list",
            Self::ResourceTemplates => "resources/templates/list",
        }
    }

    /// The result field that holds the items.
    pub fn result_key(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
            Self::ResourceTemplates => "resourceTemplates",
        }
    }

    /// The item field that names it.
    pub fn name_field(self) -> &'static str {
        match self {
            Self::Tools | Self::Prompts => "name",
            Self::Resources => "uri",
            Self::ResourceTemplates => "uriTemplate",
        }
    }

    /// The server capability a target must declare to be asked.
    pub fn capability(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources | Self::ResourceTemplates => "resources",
        }
    }

    pub fn separator(self) -> char {
        match self {
            Self::Tools | Self::Prompts => '_',
            Self::Resources | Self::ResourceTemplates => '+',
        }
    }

    /// What a client calls one item in error messages: `Unknown tool: x`.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Tools => "tool",
            Self::Prompts => "prompt",
            Self::Resources | Self::ResourceTemplates => "resource",
        }
    }
}

/// `<target><sep><name>`.
pub fn join(target: &str, separator: char, name: &str) -> String {
    let mut joined = String::with_capacity(target.len() + 1 + name.len());
    joined.push_str(target);
    joined.push(separator);
    joined.push_str(name);
    joined
}

/// Splits a prefixed name at the first separator.
pub fn split(name: &str, separator: char) -> Option<(&str, &str)> {
    name.split_once(separator)
}

/// Prefixes the naming field of one list item in place.
pub fn prefix_item(item: &mut Value, kind: ListKind, target: &str) {
    let field = kind.name_field();
    if let Some(name) = item.get(field).and_then(Value::as_str) {
        item[field] = Value::String(join(target, kind.separator(), name));
    }
}

/// Whether `uri` is an instance of the RFC 6570 `template`: a simple `{var}` stands for one path
/// segment's characters, a reserved (`{+var}`, `{#var}`) or path (`{/var}`) expansion for anything,
/// a query expansion (`{?a,b}`, `{&a}`) for an optional query.
pub fn matches_template(template: &str, uri: &str) -> bool {
    let mut pattern = String::from("^");
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        pattern.push_str(&regex::escape(&rest[..open]));
        let Some(close) = rest[open..].find('}') else {
            return false;
        };
        let expression = &rest[open + 1..open + close];
        pattern.push_str(match expression.chars().next() {
            Some('+' | '#' | '/' | '.' | ';') => ".*",
            Some('?' | '&') => r"([?&].*)?",
            _ => "[^/?#]*",
        });
        rest = &rest[open + close + 1..];
    }
    pattern.push_str(&regex::escape(rest));
    pattern.push('$');
    regex::Regex::new(&pattern).is_ok_and(|re| re.is_match(uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_instances() {
        let t = "test://template/{id}/data";
        assert!(matches_template(t, "test://template/123/data"));
        assert!(!matches_template(t, "test://template/1/2/data"));
        assert!(!matches_template(t, "test://static-text"));
        assert!(matches_template("file:///{+path}", "file:///a/b/c.txt"));
        assert!(matches_template(
            "api://items{?page,size}",
            "api://items?page=2"
        ));
        assert!(matches_template("api://items{?page,size}", "api://items"));
    }
    use serde_json::json;

    #[test]
    fn names_round_trip_at_the_first_separator() {
        let name = join("files", '_', "read_file");
        assert_eq!(name, "files_read_file");
        assert_eq!(split(&name, '_'), Some(("files", "read_file")));
        let uri = join("docs", '+', "file:///a+b.txt");
        assert_eq!(split(&uri, '+'), Some(("docs", "file:///a+b.txt")));
    }

    #[test]
    fn prefixes_the_right_field() {
        let mut template = json!({"uriTemplate": "test://{id}", "name": "t"});
        prefix_item(&mut template, ListKind::ResourceTemplates, "a");
        assert_eq!(
            template,
            json!({"uriTemplate": "a+test://{id}", "name": "t"})
        );
    }
}
