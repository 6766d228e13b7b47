//! Route templates of HTTP triggers: literals, `{name}`, `{name?}`, `{name:int}`-style
//! constraints and a trailing catch-all `{*name}`, matched case-insensitively like ASP.NET.

use percent_encoding::percent_decode_str;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param {
        name: String,
        constraint: Option<Constraint>,
        optional: bool,
    },
    CatchAll(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Constraint {
    Int,
    Alpha,
    Bool,
    Double,
}

/// A parsed route template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate {
    segments: Vec<Segment>,
    text: String,
}

/// Why a template was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad route template {template:?}: {reason}")]
pub struct RouteError {
    pub template: String,
    pub reason: String,
}

impl RouteTemplate {
    pub fn parse(template: &str) -> Result<RouteTemplate, RouteError> {
        let fail = |reason: &str| RouteError {
            template: template.to_string(),
            reason: reason.to_string(),
        };
        let raw: Vec<&str> = template
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let mut segments = Vec::with_capacity(raw.len());
        for (i, part) in raw.iter().enumerate() {
            let last = i + 1 == raw.len();
            let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) else {
                if part.contains('{') || part.contains('}') {
                    return Err(fail("a parameter must fill a whole segment"));
                }
                segments.push(Segment::Literal(part.to_ascii_lowercase()));
                continue;
            };
            if let Some(name) = inner.strip_prefix('*') {
                if !last {
                    return Err(fail("a catch-all parameter must be the last segment"));
                }
                let name = name.split(':').next().unwrap_or_default();
                segments.push(Segment::CatchAll(name.to_string()));
                continue;
            }
            let (name, optional) = match inner.strip_suffix('?') {
                Some(n) => (n, true),
                None => (inner, false),
            };
            let (name, constraint) = match name.split_once(':') {
                Some((n, c)) => (
                    n,
                    Some(parse_constraint(c).ok_or_else(|| fail("unknown constraint"))?),
                ),
                None => (name, None),
            };
            if name.is_empty() {
                return Err(fail("empty parameter name"));
            }
            if optional && !last {
                return Err(fail("only the last parameter may be optional"));
            }
            segments.push(Segment::Param {
                name: name.to_string(),
                constraint,
                optional,
            });
        }
        Ok(RouteTemplate {
            segments,
            text: template.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Literal segments first, catch-alls last: used to order candidate routes.
    pub fn precedence(&self) -> (usize, usize) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        let catch_all = usize::from(matches!(self.segments.last(), Some(Segment::CatchAll(_))));
        (catch_all, usize::MAX - literals)
    }

    /// Matches a path relative to the route prefix; answers the decoded parameters.
    pub fn matches(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut params = BTreeMap::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::CatchAll(name) => {
                    let rest = parts.get(i..).unwrap_or_default().join("/");
                    params.insert(name.clone(), decode(&rest));
                    return Some(params);
                }
                Segment::Literal(lit) => {
                    if !parts.get(i)?.eq_ignore_ascii_case(lit) {
                        return None;
                    }
                }
                Segment::Param {
                    name,
                    constraint,
                    optional,
                } => match parts.get(i) {
                    None if *optional => return (parts.len() == i).then_some(params),
                    None => return None,
                    Some(raw) => {
                        let value = decode(raw);
                        if !constraint.is_none_or(|c| satisfies(c, &value)) {
                            return None;
                        }
                        params.insert(name.clone(), value);
                    }
                },
            }
        }
        (parts.len() == self.segments.len()).then_some(params)
    }
}

fn parse_constraint(text: &str) -> Option<Constraint> {
    match text.to_ascii_lowercase().as_str() {
        "int" | "long" => Some(Constraint::Int),
        "alpha" => Some(Constraint::Alpha),
        "bool" => Some(Constraint::Bool),
        "double" | "float" | "decimal" => Some(Constraint::Double),
        _ => None,
    }
}

fn satisfies(constraint: Constraint, value: &str) -> bool {
    match constraint {
        Constraint::Int => value.parse::<i64>().is_ok(),
        Constraint::Alpha => !value.is_empty() && value.chars().all(|c| c.is_ascii_alphabetic()),
        Constraint::Bool => {
            value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false")
        }
        Constraint::Double => value.parse::<f64>().is_ok(),
    }
}

fn decode(raw: &str) -> String {
    percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        RouteTemplate::parse(template)
            .unwrap()
            .matches(path)
            .map(|m| m.into_iter().collect())
    }

    #[test]
    fn literals_match_case_insensitively_and_whole() {
        assert_eq!(params("collect", "/collect"), Some(vec![]));
        assert_eq!(params("collect", "/Collect/"), Some(vec![]));
        assert_eq!(params("collect", "/collect/more"), None);
        assert_eq!(params("collect", "/"), None);
        assert_eq!(params("v1/reports", "/v1/reports"), Some(vec![]));
    }

    #[test]
    fn parameters_constraints_and_catch_all() {
        assert_eq!(
            params("reports/{id:int}", "/reports/42"),
            Some(vec![("id".into(), "42".into())])
        );
        assert_eq!(params("reports/{id:int}", "/reports/abc"), None);
        assert_eq!(
            params("t/{name}", "/t/a%20b"),
            Some(vec![("name".into(), "a b".into())])
        );
        assert_eq!(
            params("v1/{*rest}", "/v1/tenants/7/report"),
            Some(vec![("rest".into(), "tenants/7/report".into())])
        );
        assert_eq!(
            params("v1/{*rest}", "/v1"),
            Some(vec![("rest".into(), "".into())])
        );
        assert_eq!(params("v1/{*rest}", "/v2/x"), None);
        assert_eq!(params("d/{page?}", "/d"), Some(vec![]));
        assert_eq!(
            params("d/{page?}", "/d/2"),
            Some(vec![("page".into(), "2".into())])
        );
    }

    #[test]
    fn refuses_bad_templates() {
        assert!(RouteTemplate::parse("{*rest}/x").is_err());
        assert!(RouteTemplate::parse("a{b}").is_err());
        assert!(RouteTemplate::parse("{id:regex(x)}").is_err());
        assert!(RouteTemplate::parse("{a?}/b").is_err());
    }

    #[test]
    fn literal_routes_outrank_catch_alls() {
        let lit = RouteTemplate::parse("v1/status").unwrap();
        let param = RouteTemplate::parse("v1/{x}").unwrap();
        let all = RouteTemplate::parse("v1/{*rest}").unwrap();
        assert!(lit.precedence() < param.precedence());
        assert!(param.precedence() < all.precedence());
    }
}
