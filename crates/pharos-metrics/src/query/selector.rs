//! Series selectors outside expressions: the `match[]` parameters of the metadata APIs,
//! and the selectors an expression reads (for exemplar queries).

use promql_parser::parser::Expr;

use super::engine::parse;
use super::error::QueryError;
use super::eval::selector_matchers;
use super::source::Matcher;

/// Parses a series selector (`up{job="api"}`, `{__name__=~"x.*"}`), into one matcher set
/// per `or` alternative; the metric name becomes a `__name__` matcher.
pub fn parse_series_selector(selector: &str) -> Result<Vec<Vec<Matcher>>, QueryError> {
    let expr = parse(selector)?;
    let Expr::VectorSelector(vs) = &expr else {
        return Err(QueryError::Parse {
            at: String::new(),
            message: format!("{selector:?} is not a series selector"),
        });
    };
    let sets = selector_matchers(vs)?;
    if sets.iter().any(|set| set.iter().all(Matcher::matches_empty)) {
        return Err(QueryError::Parse {
            at: String::new(),
            message: "match[] must contain at least one non-empty matcher".into(),
        });
    }
    Ok(sets)
}

/// The matcher sets of every vector and range selector in `expr`, in the order written.
pub fn extract_selectors(expr: &Expr) -> Result<Vec<Vec<Matcher>>, QueryError> {
    let mut out = Vec::new();
    walk(expr, &mut out)?;
    Ok(out)
}

fn walk(e: &Expr, out: &mut Vec<Vec<Matcher>>) -> Result<(), QueryError> {
    match e {
        Expr::VectorSelector(vs) => out.extend(selector_matchers(vs)?),
        Expr::MatrixSelector(ms) => out.extend(selector_matchers(&ms.vs)?),
        Expr::Call(c) => {
            for a in &c.args.args {
                walk(a, out)?;
            }
        }
        Expr::Aggregate(a) => {
            if let Some(p) = a.param.as_deref() {
                walk(p, out)?;
            }
            walk(&a.expr, out)?;
        }
        Expr::Unary(u) => walk(&u.expr, out)?,
        Expr::Paren(p) => walk(&p.expr, out)?,
        Expr::Binary(b) => {
            walk(&b.lhs, out)?;
            walk(&b.rhs, out)?;
        }
        Expr::Subquery(s) => walk(&s.expr, out)?,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_selector_with_name_and_matchers_parses() {
        let sets = parse_series_selector(r#"up{job="api"}"#).expect("valid");
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].len(), 2);
        assert!(parse_series_selector("sum(up)").is_err());
        assert!(parse_series_selector(r#"{job=~".*"}"#).is_err());
    }

    #[test]
    fn extract_selectors_finds_every_selector() {
        let e =
            parse(r#"rate(a[5m]) / on() group_left sum(b{x="1"}) + max_over_time(c[1h:1m])"#).expect("valid");
        assert_eq!(extract_selectors(&e).expect("ok").len(), 3);
    }
}
