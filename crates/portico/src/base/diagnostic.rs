//! Config errors: file, line, column, field path, what is wrong and a hint.

use std::fmt;

/// A position in the config file (1-based line and column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// One thing wrong with a config file.
#[derive(Clone, Debug)]
pub struct ConfigError {
    pub file: String,
    pub location: Option<Location>,
    /// The field path, e.g. `binds[0].listeners[0].routes[0].backends[0].mcp.targets[1].name`.
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
    /// Warnings do not stop the gateway from starting.
    pub warning: bool,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: String::new(),
            location: None,
            path: path.into(),
            message: message.into(),
            hint: None,
            warning: false,
        }
    }

    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            warning: true,
            ..Self::new(path, message)
        }
    }

    pub fn at(mut self, location: Location) -> Self {
        self.location = Some(location);
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(Location { line, column }) = self.location {
            write!(f, ":{line}:{column}")?;
        }
        let kind = if self.warning { "warning" } else { "error" };
        write!(f, ": {kind}: ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in one file, errors first.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The valid name closest to `wrong`, for "did you mean" hints.
pub fn closest<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(wrong, c), c))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Turns serde's "unknown field `x`, expected one of `a`, `b`" into a "did you mean" hint.
pub fn hint_for_serde_message(message: &str) -> Option<String> {
    let wrong = message.split('`').nth(1)?;
    let (_, expected) = message.split_once("expected")?;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    if let Some(best) = closest(wrong, candidates.iter().copied()) {
        return Some(format!("did you mean `{best}`?"));
    }
    (!candidates.is_empty()).then(|| format!("valid here: {}", candidates.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_field() {
        let msg = "unknown field `stdo`, expected one of `name`, `stdio`, `mcp`, `sse`, `openapi`, `policies`";
        assert_eq!(
            hint_for_serde_message(msg).unwrap(),
            "did you mean `stdio`?"
        );
    }

    #[test]
    fn lists_the_valid_fields_when_nothing_is_close() {
        let msg = "unknown field `zzzzzz`, expected `exact` or `pathPrefix`";
        assert_eq!(
            hint_for_serde_message(msg).unwrap(),
            "valid here: exact, pathPrefix"
        );
    }
}
