//! The `where` parameter of the product data API, parsed into a tree.
//!
//! Grammar (keywords case-insensitive):
//! ```text
//! expr    := and ( OR and )*
//! and     := primary ( AND primary )*
//! primary := '(' expr ')' | operand op operand
//! operand := identifier | "quoted identifier" | 'string' | number
//! op      := = | != | <> | < | <= | > | >=
//! ```
//! One side of a comparison must name a field or tag and the other must be a
//! literal. The spec's own example quotes the field in single quotes
//! (`'voltage' > 14.0`): a single-quoted string compared with a *number* is
//! read as a name, as the original API did. Anything else is an error, and
//! backends only ever render the parsed tree, never the user's text.

use std::fmt;

/// Longest `where` accepted, in bytes.
pub const MAX_WHERE_LEN: usize = 4096;
/// Deepest nesting of parentheses accepted.
pub const MAX_DEPTH: usize = 32;

/// A parsed `where` expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Both sides hold.
    And(Box<Self>, Box<Self>),
    /// Either side holds.
    Or(Box<Self>, Box<Self>),
    /// `name op value` (a field or tag against a literal).
    Cmp {
        /// Field or tag name.
        name: String,
        /// The comparison.
        op: CmpOp,
        /// The literal compared with.
        value: Literal,
    },
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=` or `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// The operator's text (shared by InfluxQL and SQL).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }

    /// The operator with its sides swapped (`5 < x` is `x > 5`).
    const fn flipped(self) -> Self {
        match self {
            Self::Lt => Self::Gt,
            Self::Le => Self::Ge,
            Self::Gt => Self::Lt,
            Self::Ge => Self::Le,
            other => other,
        }
    }

    /// Applies the operator to an ordering.
    pub fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Self::Eq => ord == Equal,
            Self::Ne => ord != Equal,
            Self::Lt => ord == Less,
            Self::Le => ord != Greater,
            Self::Gt => ord == Greater,
            Self::Ge => ord != Less,
        }
    }
}

/// A literal in a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A finite number.
    Number(f64),
    /// A string.
    Str(String),
}

/// Why a `where` was refused. Rendered for the API's 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid where clause at byte {position}: {message}")]
pub struct WhereError {
    /// Byte offset in the input where the problem was found.
    pub position: usize,
    /// What was expected or what is not allowed.
    pub message: String,
}

impl Expr {
    /// Every name the expression refers to.
    pub fn names(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_names(&mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    fn collect_names<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Self::And(a, b) | Self::Or(a, b) => {
                a.collect_names(out);
                b.collect_names(out);
            }
            Self::Cmp { name, .. } => out.push(name),
        }
    }

    /// Evaluates against a row; `lookup` gives a name's value (`None` when
    /// missing, which makes every comparison on it false, as in InfluxDB).
    pub fn eval<'v>(&self, lookup: &impl Fn(&str) -> Option<ValueRef<'v>>) -> bool {
        match self {
            Self::And(a, b) => a.eval(lookup) && b.eval(lookup),
            Self::Or(a, b) => a.eval(lookup) || b.eval(lookup),
            Self::Cmp { name, op, value } => match (lookup(name), value) {
                (Some(ValueRef::Number(v)), Literal::Number(n)) => {
                    v.partial_cmp(n).is_some_and(|o| op.holds(o))
                }
                (Some(ValueRef::Str(v)), Literal::Str(s)) => op.holds(v.cmp(s.as_str())),
                (Some(ValueRef::Bool(v)), Literal::Str(s)) => {
                    // `flag = 'true'`: booleans compare with their text.
                    let t = if v { "true" } else { "false" };
                    matches!(op, CmpOp::Eq | CmpOp::Ne) && op.holds(t.cmp(s.as_str()))
                }
                _ => false,
            },
        }
    }
    /// Appends the expression in the syntax InfluxQL and QuestDB SQL share: `AND`/`OR` in
    /// parentheses, `name op literal`, with names and strings quoted by the dialect's
    /// `quote_ident` and `quote_str`. `Display` for f64 never uses an exponent, and the
    /// parser only yields finite numbers.
    pub fn render(
        &self,
        out: &mut String,
        quote_ident: fn(&str) -> String,
        quote_str: fn(&str) -> String,
    ) {
        match self {
            Self::And(a, b) | Self::Or(a, b) => {
                out.push('(');
                a.render(out, quote_ident, quote_str);
                out.push_str(if matches!(self, Self::And(..)) {
                    " AND "
                } else {
                    " OR "
                });
                b.render(out, quote_ident, quote_str);
                out.push(')');
            }
            Self::Cmp { name, op, value } => {
                out.push_str(&quote_ident(name));
                out.push(' ');
                out.push_str(op.as_str());
                out.push(' ');
                match value {
                    Literal::Number(n) => out.push_str(&n.to_string()),
                    Literal::Str(s) => out.push_str(&quote_str(s)),
                }
            }
        }
    }
}

/// A value a row holds for a name, as seen by [`Expr::eval`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// Floats and integers.
    Number(f64),
    /// Strings and tag values.
    Str(&'a str),
    /// Booleans.
    Bool(bool),
}

impl fmt::Display for Expr {
    /// A canonical, re-parseable form (for logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::And(a, b) => write!(f, "({a} AND {b})"),
            Self::Or(a, b) => write!(f, "({a} OR {b})"),
            Self::Cmp { name, op, value } => {
                write!(
                    f,
                    "\"{}\" {} ",
                    name.replace('\\', "\\\\").replace('"', "\\\""),
                    op.as_str()
                )?;
                match value {
                    Literal::Number(n) => write!(f, "{n}"),
                    Literal::Str(s) => {
                        write!(f, "'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
                    }
                }
            }
        }
    }
}

/// Parses a `where` parameter.
pub fn parse_where(input: &str) -> Result<Expr, WhereError> {
    if input.len() > MAX_WHERE_LEN {
        return Err(WhereError {
            position: MAX_WHERE_LEN,
            message: format!("longer than {MAX_WHERE_LEN} bytes"),
        });
    }
    let tokens = lex(input)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
        end: input.len(),
    };
    let e = p.or()?;
    if let Some((at, t)) = p.tokens.get(p.pos) {
        return Err(WhereError {
            position: *at,
            message: format!("unexpected {t} (expected AND, OR or the end)"),
        });
    }
    Ok(e)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    QuotedIdent(String),
    Str(String),
    Num(f64),
    Op(CmpOp),
    And,
    Or,
    LParen,
    RParen,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ident(s) => write!(f, "name {s:?}"),
            Self::QuotedIdent(s) => write!(f, "quoted name {s:?}"),
            Self::Str(s) => write!(f, "string {s:?}"),
            Self::Num(n) => write!(f, "number {n}"),
            Self::Op(o) => write!(f, "operator {:?}", o.as_str()),
            Self::And => f.write_str("AND"),
            Self::Or => f.write_str("OR"),
            Self::LParen => f.write_str("'('"),
            Self::RParen => f.write_str("')'"),
        }
    }
}

fn err(position: usize, message: impl Into<String>) -> WhereError {
    WhereError {
        position,
        message: message.into(),
    }
}

fn lex(input: &str) -> Result<Vec<(usize, Tok)>, WhereError> {
    let b = input.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'(' => {
                out.push((start, Tok::LParen));
                i += 1;
            }
            b')' => {
                out.push((start, Tok::RParen));
                i += 1;
            }
            b'=' => {
                // `==` is accepted as `=`.
                i += if b.get(i + 1) == Some(&b'=') { 2 } else { 1 };
                out.push((start, Tok::Op(CmpOp::Eq)));
            }
            b'!' => {
                if b.get(i + 1) == Some(&b'=') {
                    out.push((start, Tok::Op(CmpOp::Ne)));
                    i += 2;
                } else {
                    return Err(err(
                        start,
                        "'!' must be followed by '=' (NOT is not supported)",
                    ));
                }
            }
            b'<' => match b.get(i + 1) {
                Some(b'=') => {
                    out.push((start, Tok::Op(CmpOp::Le)));
                    i += 2;
                }
                Some(b'>') => {
                    out.push((start, Tok::Op(CmpOp::Ne)));
                    i += 2;
                }
                _ => {
                    out.push((start, Tok::Op(CmpOp::Lt)));
                    i += 1;
                }
            },
            b'>' => {
                if b.get(i + 1) == Some(&b'=') {
                    out.push((start, Tok::Op(CmpOp::Ge)));
                    i += 2;
                } else {
                    out.push((start, Tok::Op(CmpOp::Gt)));
                    i += 1;
                }
            }
            b'\'' | b'"' => {
                let (s, next) = quoted(input, i)?;
                i = next;
                out.push((
                    start,
                    if c == b'"' {
                        Tok::QuotedIdent(s)
                    } else {
                        Tok::Str(s)
                    },
                ));
            }
            b'0'..=b'9' | b'-' | b'+' | b'.' => {
                let mut j = i + 1;
                while j < b.len()
                    && (b[j].is_ascii_digit()
                        || b[j] == b'.'
                        || b[j] == b'e'
                        || b[j] == b'E'
                        || ((b[j] == b'-' || b[j] == b'+') && matches!(b[j - 1], b'e' | b'E')))
                {
                    j += 1;
                }
                let text = &input[i..j];
                let n: f64 = text
                    .parse()
                    .map_err(|_| err(start, format!("{text:?} is not a number")))?;
                if !n.is_finite() {
                    return Err(err(start, format!("{text:?} is not a finite number")));
                }
                out.push((start, Tok::Num(n)));
                i = j;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'-')
                {
                    j += 1;
                }
                let word = &input[i..j];
                let tok = if word.eq_ignore_ascii_case("and") {
                    Tok::And
                } else if word.eq_ignore_ascii_case("or") {
                    Tok::Or
                } else if [
                    "not", "like", "in", "is", "between", "select", "from", "time",
                ]
                .iter()
                .any(|k| word.eq_ignore_ascii_case(k))
                {
                    return Err(err(
                        start,
                        format!(
                            "{word:?} is not supported: use comparisons of fields and tags \
                             with numbers and strings, AND, OR and parentheses"
                        ),
                    ));
                } else {
                    Tok::Ident(word.to_owned())
                };
                out.push((start, tok));
                i = j;
            }
            _ => {
                let ch = input[i..].chars().next().unwrap_or('?');
                return Err(err(start, format!("unexpected character {ch:?}")));
            }
        }
    }
    Ok(out)
}

/// Reads a quoted string starting at `b[i]` (the quote). Backslash escapes
/// the next character; a doubled quote stands for one quote.
fn quoted(input: &str, i: usize) -> Result<(String, usize), WhereError> {
    let b = input.as_bytes();
    let q = b[i];
    let mut s = String::new();
    let mut j = i + 1;
    let mut run = j;
    while j < b.len() {
        match b[j] {
            b'\\' if j + 1 < b.len() => {
                s.push_str(&input[run..j]);
                let ch = input[j + 1..].chars().next().unwrap_or_default();
                s.push(ch);
                j += 1 + ch.len_utf8();
                run = j;
            }
            c if c == q => {
                if b.get(j + 1) == Some(&q) {
                    s.push_str(&input[run..=j]);
                    j += 2;
                    run = j;
                } else {
                    s.push_str(&input[run..j]);
                    return Ok((s, j + 1));
                }
            }
            _ => j += 1,
        }
    }
    Err(err(i, "unterminated quoted string"))
}

struct Parser {
    tokens: Vec<(usize, Tok)>,
    pos: usize,
    depth: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |(p, _)| *p)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.tokens.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, WhereError> {
        let mut e = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, WhereError> {
        let mut e = self.primary()?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.primary()?));
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, WhereError> {
        let at = self.at();
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(err(
                    at,
                    format!("nested deeper than {MAX_DEPTH} parentheses"),
                ));
            }
            let e = self.or()?;
            let close = self.at();
            if self.next() != Some(Tok::RParen) {
                return Err(err(close, "expected ')'"));
            }
            self.depth -= 1;
            return Ok(e);
        }
        let left = self.operand()?;
        let op_at = self.at();
        let op = match self.next() {
            Some(Tok::Op(op)) => op,
            Some(t) => {
                return Err(err(
                    op_at,
                    format!("expected a comparison operator, found {t}"),
                ))
            }
            None => return Err(err(op_at, "expected a comparison operator, found the end")),
        };
        let right = self.operand()?;
        comparison(left, op, right).map_err(|m| err(at, m))
    }

    fn operand(&mut self) -> Result<Tok, WhereError> {
        let at = self.at();
        match self.next() {
            Some(t @ (Tok::Ident(_) | Tok::QuotedIdent(_) | Tok::Str(_) | Tok::Num(_))) => Ok(t),
            Some(t) => Err(err(at, format!("expected a name or a value, found {t}"))),
            None => Err(err(at, "expected a name or a value, found the end")),
        }
    }
}

fn comparison(left: Tok, op: CmpOp, right: Tok) -> Result<Expr, String> {
    use Tok::*;
    let cmp = |name: String, op, value| Ok(Expr::Cmp { name, op, value });
    match (left, right) {
        (Ident(n) | QuotedIdent(n), Num(v)) => cmp(n, op, Literal::Number(v)),
        (Ident(n) | QuotedIdent(n), Str(s)) => cmp(n, op, Literal::Str(s)),
        (Num(v), Ident(n) | QuotedIdent(n)) => cmp(n, op.flipped(), Literal::Number(v)),
        (Str(s), Ident(n) | QuotedIdent(n)) => cmp(n, op.flipped(), Literal::Str(s)),
        // The spec's `'voltage' > 14.0`: a quoted name against a number.
        (Str(n), Num(v)) => cmp(n, op, Literal::Number(v)),
        (Num(v), Str(n)) => cmp(n, op.flipped(), Literal::Number(v)),
        (Ident(_) | QuotedIdent(_), Ident(_) | QuotedIdent(_)) => {
            Err("comparing two names is not supported: compare a name with a value".into())
        }
        _ => Err("a comparison needs a field or tag name on one side".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(name: &str, op: CmpOp, value: Literal) -> Expr {
        Expr::Cmp {
            name: name.into(),
            op,
            value,
        }
    }

    #[test]
    fn parses_comparisons_and_precedence() {
        let e = parse_where("voltage > 14.0 AND (current <= 2 or product_type = 'x''y')").unwrap();
        assert_eq!(
            e,
            Expr::And(
                Box::new(cmp("voltage", CmpOp::Gt, Literal::Number(14.0))),
                Box::new(Expr::Or(
                    Box::new(cmp("current", CmpOp::Le, Literal::Number(2.0))),
                    Box::new(cmp("product_type", CmpOp::Eq, Literal::Str("x'y".into()))),
                )),
            )
        );
        // AND binds tighter than OR.
        let e = parse_where("a = 1 OR b = 2 AND c = 3").unwrap();
        assert!(matches!(e, Expr::Or(_, ref r) if matches!(**r, Expr::And(_, _))));
    }

    #[test]
    fn spec_examples() {
        let want = cmp("voltage", CmpOp::Gt, Literal::Number(14.0));
        assert_eq!(parse_where("voltage > 14.0").unwrap(), want);
        assert_eq!(parse_where("'voltage' > 14.0").unwrap(), want);
        assert_eq!(parse_where("\"voltage\" > 14.0").unwrap(), want);
        assert_eq!(parse_where("14.0 < voltage").unwrap(), want);
    }

    #[test]
    fn operators_and_literals() {
        for (s, op) in [
            ("=", CmpOp::Eq),
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            ("<>", CmpOp::Ne),
            ("<", CmpOp::Lt),
            ("<=", CmpOp::Le),
            (">", CmpOp::Gt),
            (">=", CmpOp::Ge),
        ] {
            assert_eq!(
                parse_where(&format!("x {s} -1.5e3")).unwrap(),
                cmp("x", op, Literal::Number(-1500.0))
            );
        }
        assert_eq!(
            parse_where(r#"tag = 'it\'s'"#).unwrap(),
            cmp("tag", CmpOp::Eq, Literal::Str("it's".into()))
        );
        assert_eq!(
            parse_where(r#""we""ird" = 'v'"#).unwrap(),
            cmp("we\"ird", CmpOp::Eq, Literal::Str("v".into()))
        );
    }

    #[test]
    fn refuses_everything_else_with_a_clear_message() {
        for bad in [
            "",
            "voltage",
            "voltage >",
            "> 3",
            "voltage > 1 AND",
            "(voltage > 1",
            "voltage > 1)",
            "a = b",
            "1 = 2",
            "'a' = 'b'",
            "NOT voltage > 1",
            "voltage > 1; DROP DATABASE x",
            "voltage > 1 -- comment",
            "time > now() - 1h",
            "x IN (1, 2)",
            "x LIKE 'a%'",
            "x = 'unterminated",
            "x > 1e999",
            "x = /regex/",
        ] {
            let e = parse_where(bad).expect_err(bad);
            assert!(!e.message.is_empty(), "{bad}: {e}");
        }
        let deep = format!("{}x = 1{}", "(".repeat(40), ")".repeat(40));
        assert!(parse_where(&deep).unwrap_err().message.contains("nested"));
        assert!(parse_where(&"x = 1 AND ".repeat(1000)).is_err());
    }

    #[test]
    fn display_reparses_to_the_same_tree() {
        for s in [
            "a = 1 OR (b != 'q\\'\"' AND \"c d\" >= -2.5)",
            "'voltage' > 14",
        ] {
            let e = parse_where(s).unwrap();
            assert_eq!(parse_where(&e.to_string()).unwrap(), e, "{e}");
        }
    }

    #[test]
    fn eval_semantics() {
        let e = parse_where("voltage > 14 AND (site = 'a' OR on = 'true')").unwrap();
        let row = |v: Option<f64>, site: &'static str, on: bool| {
            move |n: &str| match n {
                "voltage" => v.map(ValueRef::Number),
                "site" => Some(ValueRef::Str(site)),
                "on" => Some(ValueRef::Bool(on)),
                _ => None,
            }
        };
        assert!(e.eval(&row(Some(15.0), "a", false)));
        assert!(e.eval(&row(Some(15.0), "b", true)));
        assert!(!e.eval(&row(Some(15.0), "b", false)));
        assert!(!e.eval(&row(Some(13.0), "a", true)));
        assert!(!e.eval(&row(None, "a", true)), "missing is never true");
        let ne = parse_where("voltage != 1").unwrap();
        assert!(!ne.eval(&row(None, "a", true)), "missing != x is false too");
        assert_eq!(e.names(), vec!["on", "site", "voltage"]);
    }
}
