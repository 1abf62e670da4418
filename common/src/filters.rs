//! Restore selection and remapping rules parsed from user input: topic patterns, partition
//! lists, partition mappings and sed-style topic rewrites. Each parser names the offending
//! input and the accepted form, because these strings are typed by an operator under stress.

use regex::Regex;
use std::collections::BTreeMap;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum FilterError {
    #[error("invalid topic pattern {pattern:?}: {reason}; give a topic name or a regular expression like \"orders-.*\"")]
    BadPattern { pattern: String, reason: String },
    #[error("invalid partition {input:?} in {what}: partitions are integers >= 0, e.g. \"0,1,2\"")]
    BadPartition { what: String, input: String },
    #[error("invalid partition mapping {input:?}: {reason}; the form is \"src:dst,src:dst\", e.g. \"0:0,1:2\"")]
    BadMapping { input: String, reason: String },
    #[error("invalid topic rewrite {input:?}: {reason}; the form is \"s/REGEX/REPLACEMENT/\", e.g. \"s/^/prod-/\"")]
    BadRewrite { input: String, reason: String },
}

/// A source topic selector: an exact name or an anchored regular expression.
#[derive(Debug, Clone)]
pub struct TopicPattern {
    pub raw: String,
    regex: Regex,
}

impl TopicPattern {
    pub fn parse(raw: &str) -> Result<Self, FilterError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(FilterError::BadPattern {
                pattern: raw.into(),
                reason: "it is empty".into(),
            });
        }
        let regex = Regex::new(&format!("^(?:{raw})$")).map_err(|e| FilterError::BadPattern {
            pattern: raw.into(),
            reason: e
                .to_string()
                .lines()
                .last()
                .unwrap_or("bad regex")
                .trim()
                .to_string(),
        })?;
        Ok(Self {
            raw: raw.to_string(),
            regex,
        })
    }

    pub fn matches(&self, topic: &str) -> bool {
        self.regex.is_match(topic)
    }
}

/// Splits a comma-separated CLI list, dropping blanks.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses one partition number; `what` names the flag for the error.
pub fn parse_partition(what: &str, s: &str) -> Result<i32, FilterError> {
    s.trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p >= 0)
        .ok_or_else(|| FilterError::BadPartition {
            what: what.into(),
            input: s.into(),
        })
}

/// Parses "0,1,2".
pub fn parse_partition_list(what: &str, s: &str) -> Result<Vec<i32>, FilterError> {
    split_list(s)
        .iter()
        .map(|p| parse_partition(what, p))
        .collect()
}

/// A source → target partition mapping (1:1, N:1 or M:N). Unmapped partitions keep their
/// number. Several sources mapped to one target are merged by the planner into one task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionMapping(pub BTreeMap<i32, i32>);

impl PartitionMapping {
    /// Parses "src:dst,...", refusing negatives and a source mapped twice.
    pub fn parse(input: &str) -> Result<Self, FilterError> {
        let bad = |reason: String| FilterError::BadMapping {
            input: input.into(),
            reason,
        };
        let mut map = BTreeMap::new();
        for pair in split_list(input) {
            let (s, d) = pair
                .split_once(':')
                .ok_or_else(|| bad(format!("{pair:?} has no ':'")))?;
            let num = |x: &str| {
                x.trim()
                    .parse::<i32>()
                    .ok()
                    .filter(|p| *p >= 0)
                    .ok_or_else(|| bad(format!("{x:?} is not a partition number >= 0")))
            };
            let (s, d) = (num(s)?, num(d)?);
            if map.insert(s, d).is_some() {
                return Err(bad(format!("source partition {s} is mapped twice")));
            }
        }
        Ok(Self(map))
    }

    pub fn target_of(&self, source: i32) -> i32 {
        self.0.get(&source).copied().unwrap_or(source)
    }
}

/// A sed-style `s/REGEX/REPLACEMENT/[g]` rewrite of target topic names.
#[derive(Debug, Clone)]
pub struct TopicRewrite {
    regex: Regex,
    replacement: String,
    global: bool,
}

impl TopicRewrite {
    pub fn parse(input: &str) -> Result<Self, FilterError> {
        let bad = |reason: &str| FilterError::BadRewrite {
            input: input.into(),
            reason: reason.into(),
        };
        let mut chars = input.chars();
        if chars.next() != Some('s') {
            return Err(bad("it must start with 's'"));
        }
        let delim = chars.next().ok_or_else(|| bad("it has no delimiter"))?;
        if delim.is_alphanumeric() || delim == '\\' {
            return Err(bad(
                "the delimiter must be a punctuation character like '/'",
            ));
        }
        let parts = split_unescaped(chars.as_str(), delim);
        if parts.len() != 3 {
            return Err(bad("it needs exactly three delimiters"));
        }
        let global = match parts[2].as_str() {
            "" => false,
            "g" => true,
            _ => return Err(bad("the only flag accepted is 'g'")),
        };
        let regex = Regex::new(&parts[0])
            .map_err(|_| bad("the pattern is not a valid regular expression"))?;
        // sed's \1 becomes the regex crate's ${1}.
        let replacement = Regex::new(r"\\(\d)")
            .map(|r| r.replace_all(&parts[1], "$${$1}").into_owned())
            .unwrap_or_else(|_| parts[1].clone());
        Ok(Self {
            regex,
            replacement,
            global,
        })
    }

    pub fn apply(&self, topic: &str) -> String {
        if self.global {
            self.regex
                .replace_all(topic, self.replacement.as_str())
                .into_owned()
        } else {
            self.regex
                .replace(topic, self.replacement.as_str())
                .into_owned()
        }
    }
}

fn split_unescaped(s: &str, delim: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            if c != delim {
                current.push('\\');
            }
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == delim {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

/// Kafka's rules for a topic name, checked before anything is created or written.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err(format!(
            "target topic name {name:?} must be 1 to 249 characters"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("target topic name {name:?} is not allowed"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "target topic name {name:?} has characters Kafka refuses; use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_rules() {
        assert_eq!(PartitionMapping::parse("0:0,1:2").unwrap().target_of(1), 2);
        let merge = PartitionMapping::parse("0:1,1:1").unwrap();
        assert_eq!(
            (merge.target_of(0), merge.target_of(1)),
            (1, 1),
            "N:1 is a merge"
        );
        assert!(PartitionMapping::parse("0:1,0:2").is_err());
        assert!(PartitionMapping::parse("-1:1").is_err());
        assert!(PartitionMapping::parse("0-1").is_err());
    }

    #[test]
    fn rewrite_rules() {
        assert_eq!(
            TopicRewrite::parse("s/^/prod-/").unwrap().apply("a"),
            "prod-a"
        );
        assert_eq!(
            TopicRewrite::parse(r"s/(.*)-v1/\1-v2/")
                .unwrap()
                .apply("x-v1"),
            "x-v2"
        );
        assert_eq!(TopicRewrite::parse("s/a/b/g").unwrap().apply("aa"), "bb");
        assert!(TopicRewrite::parse("s/(/x/").is_err());
        assert!(TopicRewrite::parse("x/a/b/").is_err());
        assert!(TopicRewrite::parse("s/a/b").is_err());
    }

    #[test]
    fn patterns() {
        let p = TopicPattern::parse("orders-.*").unwrap();
        assert!(p.matches("orders-1"));
        assert!(!p.matches("xorders-1"));
        assert!(TopicPattern::parse("(").is_err());
        assert!(TopicPattern::parse("orders").unwrap().matches("orders"));
        assert!(!TopicPattern::parse("orders").unwrap().matches("orders2"));
    }
}
