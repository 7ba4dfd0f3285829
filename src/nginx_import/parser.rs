//! The nginx configuration syntax, read into a tree of directives: words, quoted strings
//! (`"..."`, `'...'`, with backslash escapes), `${var}` inside words, `#` comments, `;` ending a
//! simple directive and `{ ... }` holding a block's children.
//!
//! Owns only the syntax: what a directive means is decided in `super`. Must not read other
//! files (`include` is a directive like any other here) nor evaluate variables.

/// One directive: `name arg arg ...;` or `name arg ... { children }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The first word, as written (nginx directive names are lowercase).
    pub name: String,
    /// The remaining words, with quotes removed and escapes resolved.
    pub args: Vec<String>,
    /// 1-based line of the directive's name, for messages.
    pub line: usize,
    /// `Some` for a block (`server { ... }`), even an empty one.
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    /// The children of a block, or nothing for a simple directive.
    pub fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or_default()
    }

    /// The first argument, or `""`.
    pub fn arg0(&self) -> &str {
        self.args.first().map_or("", String::as_str)
    }

    /// The directive as written on one line (without its block), for comments: arguments that
    /// need quotes get them back.
    pub fn display(&self) -> String {
        let mut out = self.name.clone();
        for arg in &self.args {
            out.push(' ');
            if arg.is_empty() || arg.contains([' ', '\t', ';', '{', '}', '#', '"', '\'']) {
                out.push('"');
                out.push_str(&arg.replace('\\', "\\\\").replace('"', "\\\""));
                out.push('"');
            } else {
                out.push_str(arg);
            }
        }
        out
    }
}

/// Why the text is not valid nginx syntax, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    /// 1-based line the problem was found on.
    pub line: usize,
    /// What is wrong, in nginx's own terms where it has them.
    pub message: String,
}

/// A lexical token with the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A word or a quoted string (quotes removed).
    Word(String),
    Semicolon,
    Open,
    Close,
}

/// Reads the whole configuration text into its top-level directives.
///
/// # Errors
/// A [`SyntaxError`] naming the line: an unterminated quote, a `}` without its `{`, a block not
/// closed by the end of the file (naming the line of its `{`), a directive without its `;`, or
/// `;`/`{` where a directive name should be.
pub fn parse(text: &str) -> Result<Vec<Directive>, SyntaxError> {
    let tokens = tokenize(text)?;
    let mut pos = 0;
    let top = parse_block(&tokens, &mut pos, None)?;
    Ok(top)
}

/// Parses directives until the matching `}` (when `opened_at` is the line of a `{`) or the end.
fn parse_block(
    tokens: &[(Token, usize)],
    pos: &mut usize,
    opened_at: Option<usize>,
) -> Result<Vec<Directive>, SyntaxError> {
    let mut out = Vec::new();
    loop {
        let Some((token, line)) = tokens.get(*pos) else {
            return match opened_at {
                Some(open) => Err(SyntaxError {
                    line: open,
                    message: "unbalanced braces: this \"{\" is never closed".into(),
                }),
                None => Ok(out),
            };
        };
        *pos += 1;
        let name = match token {
            Token::Close => {
                return match opened_at {
                    Some(_) => Ok(out),
                    None => Err(SyntaxError {
                        line: *line,
                        message: "unbalanced braces: unexpected \"}\"".into(),
                    }),
                }
            }
            Token::Semicolon => {
                return Err(SyntaxError {
                    line: *line,
                    message: "unexpected \";\" where a directive name should be".into(),
                })
            }
            Token::Open => {
                return Err(SyntaxError {
                    line: *line,
                    message: "unexpected \"{\" where a directive name should be".into(),
                })
            }
            Token::Word(w) => w.clone(),
        };
        let start = *line;
        let mut args = Vec::new();
        loop {
            let Some((token, line)) = tokens.get(*pos) else {
                return Err(SyntaxError {
                    line: start,
                    message: format!(
                        "unexpected end of file: directive \"{name}\" has no \";\" or \"{{\""
                    ),
                });
            };
            *pos += 1;
            match token {
                Token::Word(w) => args.push(w.clone()),
                Token::Semicolon => {
                    out.push(Directive {
                        name,
                        args,
                        line: start,
                        block: None,
                    });
                    break;
                }
                Token::Open => {
                    let children = parse_block(tokens, pos, Some(*line))?;
                    out.push(Directive {
                        name,
                        args,
                        line: start,
                        block: Some(children),
                    });
                    break;
                }
                Token::Close => {
                    return Err(SyntaxError {
                        line: *line,
                        message: format!("unexpected \"}}\": directive \"{name}\" has no \";\""),
                    })
                }
            }
        }
    }
}

/// Splits the text into tokens the way nginx's `ngx_conf_read_token` does: `#` starts a comment
/// only where a token could start, quotes group, and `;`, `{` and `}` end a word.
fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, SyntaxError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            ';' => {
                tokens.push((Token::Semicolon, line));
                chars.next();
            }
            '{' => {
                tokens.push((Token::Open, line));
                chars.next();
            }
            '}' => {
                tokens.push((Token::Close, line));
                chars.next();
            }
            '"' | '\'' => {
                let start = line;
                chars.next();
                let mut word = String::new();
                loop {
                    let Some(ch) = chars.next() else {
                        return Err(SyntaxError {
                            line: start,
                            message: format!("unterminated quoted string (opened with {c})"),
                        });
                    };
                    match ch {
                        ch if ch == c => break,
                        '\\' => match chars.next() {
                            Some('n') => word.push('\n'),
                            Some('t') => word.push('\t'),
                            Some('r') => word.push('\r'),
                            Some(q) if q == '"' || q == '\'' || q == '\\' => word.push(q),
                            Some(other) => {
                                if other == '\n' {
                                    line += 1;
                                }
                                word.push('\\');
                                word.push(other);
                            }
                            None => {
                                return Err(SyntaxError {
                                    line: start,
                                    message: format!(
                                        "unterminated quoted string (opened with {c})"
                                    ),
                                })
                            }
                        },
                        '\n' => {
                            line += 1;
                            word.push('\n');
                        }
                        other => word.push(other),
                    }
                }
                // nginx wants a separator after a closing quote.
                if chars
                    .peek()
                    .is_some_and(|&n| !(n.is_whitespace() || matches!(n, ';' | '{' | '}')))
                {
                    return Err(SyntaxError {
                        line,
                        message: format!("unexpected character after the closing quote {c}"),
                    });
                }
                tokens.push((Token::Word(word), start));
            }
            _ => {
                let mut word = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() || matches!(ch, ';' | '{' | '}') {
                        break;
                    }
                    chars.next();
                    if ch == '\\' {
                        if let Some(next) = chars.next() {
                            word.push('\\');
                            word.push(next);
                        }
                        continue;
                    }
                    word.push(ch);
                    // `${name}` keeps its braces inside the word.
                    if ch == '$' && chars.peek() == Some(&'{') {
                        for inner in chars.by_ref() {
                            word.push(inner);
                            if inner == '}' {
                                break;
                            }
                        }
                    }
                }
                tokens.push((Token::Word(word), line));
            }
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ds: &[Directive]) -> Vec<&str> {
        ds.iter().map(|d| d.name.as_str()).collect()
    }

    #[test]
    fn simple_directives_and_blocks_nest_with_their_lines() {
        let tree = parse("http {\n  server {\n    listen 443 ssl;\n  }\n}\n").unwrap();
        assert_eq!(names(&tree), ["http"]);
        let server = &tree[0].children()[0];
        assert_eq!((server.name.as_str(), server.line), ("server", 2));
        let listen = &server.children()[0];
        assert_eq!(listen.args, ["443", "ssl"]);
        assert_eq!(listen.line, 3);
        assert!(listen.block.is_none());
    }

    #[test]
    fn comments_are_skipped_but_a_hash_inside_a_word_is_kept() {
        let tree = parse("# top\nlisten 80; # trailing\nadd_header X a#b;\n").unwrap();
        assert_eq!(names(&tree), ["listen", "add_header"]);
        assert_eq!(tree[1].args, ["X", "a#b"]);
    }

    #[test]
    fn quoted_strings_keep_spaces_and_semicolons_and_resolve_escapes() {
        let tree =
            parse("add_header Strict-Transport-Security \"max-age=1; preload\";\nmap $a $b { '' close; }\nx \"a\\\"b\";")
                .unwrap();
        assert_eq!(tree[0].args[1], "max-age=1; preload");
        assert_eq!(tree[1].children()[0].name, "");
        assert_eq!(tree[1].children()[0].args, ["close"]);
        assert_eq!(tree[2].args, ["a\"b"]);
    }

    #[test]
    fn regex_locations_with_parentheses_and_pipes_are_one_word() {
        let tree = parse(
            "location ~* /(api/kernels/[^/]+/(channels|iopub|shell|stdin)|terminals/websocket)/? { proxy_pass http://j; }",
        )
        .unwrap();
        assert_eq!(
            tree[0].args,
            [
                "~*",
                "/(api/kernels/[^/]+/(channels|iopub|shell|stdin)|terminals/websocket)/?"
            ]
        );
        assert_eq!(tree[0].children()[0].args, ["http://j"]);
    }

    #[test]
    fn braces_of_a_variable_stay_inside_the_word() {
        let tree = parse("return 301 https://${host}$request_uri;").unwrap();
        assert_eq!(tree[0].args, ["301", "https://${host}$request_uri"]);
    }

    #[test]
    fn an_unclosed_block_names_the_line_of_its_brace() {
        let err = parse("http {\n server {\n  listen 80;\n }\n").unwrap_err();
        assert_eq!(err.line, 1);
        assert!(err.message.contains("unbalanced"), "{err}");
    }

    #[test]
    fn a_stray_closing_brace_names_its_line() {
        let err = parse("server {\n}\n}\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("unbalanced"), "{err}");
    }

    #[test]
    fn a_directive_without_semicolon_is_an_error_at_its_line() {
        let err = parse("server {\n listen 80\n}\n").unwrap_err();
        assert_eq!(err.line, 3);
        let err = parse("listen 80").unwrap_err();
        assert_eq!(err.line, 1);
        assert!(err.message.contains("listen"), "{err}");
    }

    #[test]
    fn an_unterminated_quote_names_the_line_it_opened_on() {
        let err = parse("listen 80;\nadd_header X \"open\n\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("unterminated"), "{err}");
    }

    #[test]
    fn a_semicolon_or_brace_without_a_name_is_an_error() {
        assert_eq!(parse("listen 80;;").unwrap_err().line, 1);
        assert_eq!(parse("\n{ listen 80; }").unwrap_err().line, 2);
    }

    #[test]
    fn display_quotes_arguments_that_need_it() {
        let tree = parse("proxy_set_header Connection \"\";\nadd_header X 'a b';").unwrap();
        assert_eq!(tree[0].display(), "proxy_set_header Connection \"\"");
        assert_eq!(tree[1].display(), "add_header X \"a b\"");
    }
}
