//! The little XML the endpoint feed reads: one Windows event (`<Event>` with
//! `<System>` and `<EventData>`) as Sysmon for Linux writes it to syslog, and the
//! `EventData` cell of a Sentinel `Event` / `SecurityEvent` row. Elements,
//! attributes, text, the five named entities and numeric character references;
//! no DTDs, no namespaces resolved (prefixes are kept in names). Depth and element
//! counts are bounded; anything else is an error with the byte offset, never a panic.

use serde_json::{Map, Value};

/// Deeper than any event (Event/EventData/Data is 3; a DataItem wraps one more).
const MAX_DEPTH: usize = 16;
/// More elements than any event carries (Sysmon's largest has about 40).
const MAX_ELEMENTS: usize = 4096;

/// One parsed element.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every descendant named `name`, depth first.
    pub fn descendants<'a>(&'a self, name: &str, out: &mut Vec<&'a Element>) {
        for c in &self.children {
            if c.name == name {
                out.push(c);
            }
            c.descendants(name, out);
        }
    }
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
    elements: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        format!("malformed XML at byte {}: {what}", self.pos)
    }

    fn rest(&self) -> &str {
        self.s.get(self.pos..).unwrap_or("")
    }

    fn skip_ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }

    fn name(&mut self) -> Result<String, String> {
        let r = self.rest();
        let end = r
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '>' | '=' | '<'))
            .unwrap_or(r.len());
        if end == 0 {
            return Err(self.err("expected a name"));
        }
        let n = r[..end].to_string();
        self.pos += end;
        Ok(n)
    }

    /// Skips `<?...?>`, `<!--...-->` and `<!...>` before the root.
    fn skip_prolog(&mut self) -> Result<(), String> {
        loop {
            self.skip_ws();
            let r = self.rest();
            let close = if r.starts_with("<?") {
                "?>"
            } else if r.starts_with("<!--") {
                "-->"
            } else if r.starts_with("<!") {
                ">"
            } else {
                return Ok(());
            };
            match r.find(close) {
                Some(i) => self.pos += i + close.len(),
                None => return Err(self.err("unterminated declaration")),
            }
        }
    }

    fn element(&mut self, depth: usize) -> Result<Element, String> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deep"));
        }
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            return Err(self.err("too many elements"));
        }
        if !self.rest().starts_with('<') {
            return Err(self.err("expected '<'"));
        }
        self.pos += 1;
        let mut el = Element {
            name: self.name()?,
            ..Element::default()
        };
        loop {
            self.skip_ws();
            let r = self.rest();
            if r.starts_with("/>") {
                self.pos += 2;
                return Ok(el);
            }
            if r.starts_with('>') {
                self.pos += 1;
                break;
            }
            if r.is_empty() {
                return Err(self.err("the document ends inside a tag"));
            }
            let key = self.name()?;
            self.skip_ws();
            if !self.rest().starts_with('=') {
                return Err(self.err("expected '=' after an attribute name"));
            }
            self.pos += 1;
            self.skip_ws();
            let quote = match self.rest().chars().next() {
                Some(q @ ('"' | '\'')) => q,
                _ => return Err(self.err("expected a quoted attribute value")),
            };
            self.pos += 1;
            let Some(end) = self.rest().find(quote) else {
                return Err(self.err("unterminated attribute value"));
            };
            let raw = &self.rest()[..end];
            let value = unescape(raw).map_err(|e| self.err(&e))?;
            self.pos += end + 1;
            el.attrs.push((key, value));
        }
        // Content: text, children, comments, CDATA, up to the matching end tag.
        loop {
            let r = self.rest();
            let Some(lt) = r.find('<') else {
                return Err(self.err(&format!("the document ends inside <{}>", el.name)));
            };
            if lt > 0 {
                let t = unescape(&r[..lt]).map_err(|e| self.err(&e))?;
                el.text.push_str(&t);
                self.pos += lt;
            }
            let r = self.rest();
            if let Some(after) = r.strip_prefix("</") {
                let end = after.find('>').ok_or_else(|| self.err("unterminated end tag"))?;
                if after[..end].trim() != el.name {
                    return Err(self.err(&format!("</{}> closes <{}>", after[..end].trim(), el.name)));
                }
                self.pos += 2 + end + 1;
                return Ok(el);
            } else if r.starts_with("<!--") {
                let end = r.find("-->").ok_or_else(|| self.err("unterminated comment"))?;
                self.pos += end + 3;
            } else if let Some(after) = r.strip_prefix("<![CDATA[") {
                let end = after.find("]]>").ok_or_else(|| self.err("unterminated CDATA"))?;
                el.text.push_str(&after[..end]);
                self.pos += 9 + end + 3;
            } else {
                let child = self.element(depth + 1)?;
                el.children.push(child);
            }
        }
    }
}

fn unescape(s: &str) -> Result<String, String> {
    if !s.contains('&') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after
            .find(';')
            .filter(|e| *e <= 10)
            .ok_or("an '&' that starts no entity")?;
        let ent = &after[..end];
        let c = match ent {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(h) = ent.strip_prefix("#x").or_else(|| ent.strip_prefix("#X")) {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = ent.strip_prefix('#') {
                    d.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown entity &{ent};"))?
            }
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses one document (its root element; a prolog is skipped, trailing text refused).
pub fn parse(s: &str) -> Result<Element, String> {
    let mut p = Parser { s, pos: 0, elements: 0 };
    p.skip_prolog()?;
    let root = p.element(0)?;
    p.skip_ws();
    if !p.rest().is_empty() {
        return Err(p.err("text after the root element"));
    }
    Ok(root)
}

/// The `Data Name="X"` values under an element (an `EventData`, or a `DataItem` that
/// holds one): name → text.
pub fn named_data(root: &Element) -> Map<String, Value> {
    let mut data = Vec::new();
    if root.name == "Data" {
        data.push(root);
    }
    root.descendants("Data", &mut data);
    data.into_iter()
        .filter_map(|d| Some((d.attr("Name")?.to_string(), Value::String(d.text.clone()))))
        .collect()
}

/// An `<Event>` in the JSON form the `evtx` crate gives a record (`Event.System`
/// with `#attributes`, `Event.EventData` as name → value), so one normalizer reads
/// both.
pub fn event_json(event: &Element) -> Result<Value, String> {
    if event.name != "Event" {
        return Err(format!("the root element is <{}>, not <Event>", event.name));
    }
    let system = event.child("System").ok_or("an <Event> without <System>")?;
    let mut sys = Map::new();
    for c in &system.children {
        let v = if c.attrs.is_empty() {
            Value::String(c.text.clone())
        } else {
            let attrs: Map<String, Value> = c
                .attrs
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let mut m = Map::new();
            m.insert("#attributes".into(), Value::Object(attrs));
            if !c.text.is_empty() {
                m.insert("#text".into(), Value::String(c.text.clone()));
            }
            Value::Object(m)
        };
        sys.insert(c.name.clone(), v);
    }
    let mut ev = Map::new();
    ev.insert("System".into(), Value::Object(sys));
    if let Some(data) = event.child("EventData") {
        ev.insert("EventData".into(), Value::Object(named_data(data)));
    }
    let mut root = Map::new();
    root.insert("Event".into(), Value::Object(ev));
    Ok(Value::Object(root))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_event_parses_to_the_evtx_json_shape() {
        let x = r#"<Event><System><Provider Name="Linux-Sysmon" Guid="{ff}"/><EventID>1</EventID><Computer>web01</Computer></System><EventData><Data Name="CommandLine">sh -c &quot;a &amp;&amp; b&quot; &#x41;</Data><Data Name="User">root</Data></EventData></Event>"#;
        let v = event_json(&parse(x).unwrap()).unwrap();
        assert_eq!(v["Event"]["System"]["Provider"]["#attributes"]["Name"], "Linux-Sysmon");
        assert_eq!(v["Event"]["System"]["EventID"], "1");
        assert_eq!(v["Event"]["EventData"]["CommandLine"], "sh -c \"a && b\" A");
    }

    #[test]
    fn broken_documents_are_errors() {
        for bad in [
            "<Event><System>",
            "<Event><System></Event>",
            "<Event a=b/>",
            "<Event>&bogus;</Event>",
            "<Event></Event>trailing",
            "",
            "<",
            "<Event a=\"x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(&deep).unwrap_err().contains("deep"));
        assert!(event_json(&parse("<Other/>").unwrap()).is_err());
    }
}
