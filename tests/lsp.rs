//! `nnc lsp` driven as an editor drives it: a spawned server, JSON-RPC over
//! its standard input and output.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{Value, json};

struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: i64,
    /// Notifications read while waiting for something else.
    pending: Vec<Value>,
}

const URI: &str = "file:///work/model.nn";

impl Client {
    fn start() -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nnc"))
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("nnc lsp starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut client = Client { child, stdin, stdout, next_id: 0, pending: Vec::new() };
        let capabilities = client.request("initialize", json!({ "capabilities": {}, "processId": null }));
        assert_eq!(capabilities["capabilities"]["hoverProvider"], json!(true), "{capabilities}");
        client.notify("initialized", json!({}));
        client
    }

    fn send(&mut self, message: Value) {
        let body = message.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).expect("write");
        self.stdin.flush().expect("flush");
    }

    fn read(&mut self) -> Value {
        let mut length = 0;
        loop {
            let mut line = String::new();
            assert!(self.stdout.read_line(&mut line).expect("read") > 0, "the server closed its output");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(n) = line.strip_prefix("Content-Length: ") {
                length = n.parse().expect("length");
            }
        }
        let mut body = vec![0; length];
        self.stdout.read_exact(&mut body).expect("body");
        serde_json::from_slice(&body).expect("JSON")
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        loop {
            let message = self.read();
            if message["id"] == json!(id) {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
            self.pending.push(message);
        }
    }

    /// The next diagnostics published for the document.
    fn diagnostics(&mut self) -> Vec<Value> {
        let index = self.pending.iter().position(|m| m["method"] == "textDocument/publishDiagnostics");
        let message = match index {
            Some(i) => self.pending.remove(i),
            None => loop {
                let m = self.read();
                if m["method"] == "textDocument/publishDiagnostics" {
                    break m;
                }
            },
        };
        assert_eq!(message["params"]["uri"], URI);
        message["params"]["diagnostics"].as_array().expect("a list").clone()
    }

    fn open(&mut self, text: &str) {
        let document = json!({ "uri": URI, "languageId": "nn", "version": 1, "text": text });
        self.notify("textDocument/didOpen", json!({ "textDocument": document }));
    }

    fn change(&mut self, version: i64, text: &str) {
        let params =
            json!({ "textDocument": { "uri": URI, "version": version }, "contentChanges": [{ "text": text }] });
        self.notify("textDocument/didChange", params);
    }

    /// `request` at the position of the `nth` (from 0) `needle` in `text`, `offset` bytes into it.
    fn at(&mut self, method: &str, text: &str, needle: &str, nth: usize, offset: usize, extra: Value) -> Value {
        let start = text.match_indices(needle).nth(nth).expect("needle").0 + offset;
        let mut params = json!({ "textDocument": { "uri": URI }, "position": position(text, start) });
        if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        self.request(method, params)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The LSP position (line, UTF-16 column) of byte `offset`, computed here
/// independently of the server.
fn position(text: &str, offset: usize) -> Value {
    let before = &text[..offset];
    let line = before.matches('\n').count();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    json!({ "line": line, "character": before[line_start..].encode_utf16().count() })
}

fn range_start(diagnostic: &Value) -> (u64, u64) {
    let start = &diagnostic["range"]["start"];
    (start["line"].as_u64().expect("line"), start["character"].as_u64().expect("character"))
}

const THREE_MISTAKES: &str = "model m {
  input x: [4]
  target y: class(3)
  x |> dense(8) |> relu |> maxpool(2) => h
  x |> dense(3) |> sigmoidd => p
  loss = cross_entropy(p, y)
  train { data = csv(\"données😀×.csv\")  epochs = 0 }
}
";

#[test]
fn diagnostics_follow_every_edit() {
    let mut client = Client::start();
    client.open(THREE_MISTAKES);
    let diagnostics = client.diagnostics();
    assert_eq!(diagnostics.len(), 3, "{diagnostics:#?}");
    let at = |needle: &str| {
        let p = position(THREE_MISTAKES, THREE_MISTAKES.find(needle).expect("needle"));
        (p["line"].as_u64().expect("line"), p["character"].as_u64().expect("character"))
    };
    let starts: Vec<(u64, u64)> = diagnostics.iter().map(range_start).collect();
    assert_eq!(starts, vec![at("maxpool"), at("sigmoidd"), at("0 }")]);
    // The third is after an emoji (two UTF-16 units) and two other non-ASCII
    // letters: 48 characters, 53 bytes, 49 UTF-16 units.
    assert_eq!(starts[2], (6, 49));
    let shape = &diagnostics[0];
    assert_eq!(shape["severity"], 1);
    assert_eq!(shape["source"], "nnc");
    assert!(shape["message"].as_str().expect("text").contains("`maxpool` expects an image"), "{shape}");
    let unknown = &diagnostics[1];
    assert_eq!(unknown["code"], "nnc::name::unknown_layer");
    assert!(unknown["message"].as_str().expect("text").contains("help: did you mean `sigmoid`?"), "{unknown}");
    let end = &unknown["range"]["end"];
    assert_eq!((end["line"].as_u64(), end["character"].as_u64()), (Some(4), Some(27)));

    // Fixing one mistake leaves two; fixing all clears them.
    client.change(2, &THREE_MISTAKES.replace("sigmoidd", "sigmoid"));
    assert_eq!(client.diagnostics().len(), 2);
    let fixed = THREE_MISTAKES
        .replace("sigmoidd", "sigmoid")
        .replace(" |> maxpool(2)", "")
        .replace("epochs = 0", "epochs = 1")
        .replace("x |> dense(3)", "h |> dense(3)");
    client.change(3, &fixed);
    assert_eq!(client.diagnostics(), Vec::<Value>::new());
    // A warning is published as one.
    client.change(4, &fixed.replace("=> p", "=> p\n  x |> dense(2) => spare"));
    let warned = client.diagnostics();
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert_eq!((warned[0]["severity"].as_u64(), range_start(&warned[0])), (Some(2), (5, 19)));
    // A name defined twice: the first definition is related information.
    client.change(5, &fixed.replace("=> p", "=> p\n  x |> dense(2) => h"));
    let twice = client.diagnostics();
    let related = &twice[0]["relatedInformation"][0];
    assert_eq!(related["location"]["range"]["start"], position(&fixed, fixed.find("=> h").expect("found") + 3));
    assert_eq!(related["location"]["uri"], URI);
    client.notify("textDocument/didClose", json!({ "textDocument": { "uri": URI } }));
    assert_eq!(client.diagnostics(), Vec::<Value>::new());
    // A syntax error is one diagnostic; the server keeps serving.
    client.open("model m { input x: [4 }");
    let syntax = client.diagnostics();
    assert_eq!(syntax.len(), 1);
    assert_eq!(syntax[0]["code"], "nnc::syntax::unexpected");
    assert_eq!(client.request("shutdown", Value::Null), Value::Null);
}

const LENET: &str = "model lenet {
  input image: [1, 28, 28] // 28×28 grey levels
  target digit: class(10)

  image
    |> conv2d(6, kernel = 5, padding = 2) |> relu |> maxpool(2)
    |> conv2d(16, kernel = 5) |> relu |> maxpool(2)
    |> flatten
    |> dense(120) |> relu => features
  features |> dense(84) as encoder |> relu |> dense(120, tied = encoder) => rebuilt
  features |> dense(10) => logits
  loss = cross_entropy(logits, digit)
  train { optimizer = sgd(lr = 0.05, momentum = 0.9)  batch = 64  epochs = 5 }
}
";

#[test]
fn hover_hints_definitions_references_completion_symbols_and_formatting() {
    let mut client = Client::start();
    client.open(LENET);
    let diagnostics = client.diagnostics();
    assert!(diagnostics.iter().all(|d| d["severity"] == 2), "{diagnostics:#?}");

    // Hover on a layer: its output shape, parameters, cost and derivation.
    let hover = client.at("textDocument/hover", LENET, "conv2d(16", 0, 1, json!({}));
    let text = hover["contents"]["value"].as_str().expect("markdown");
    assert!(text.contains("`conv2d` → `[16, 10, 10]`"), "{text}");
    assert!(text.contains("2,416 parameters"), "{text}");
    assert!(text.contains("(14 + 2·0 − 5)/1 + 1 = 10"), "{text}");
    // On a keyword argument: its meaning and default.
    let hover = client.at("textDocument/hover", LENET, "padding", 0, 2, json!({}));
    let text = hover["contents"]["value"].as_str().expect("markdown");
    assert!(
        text.contains("`padding` of `conv2d`: zeros added on each side, or `[height, width]` (default 0)"),
        "{text}"
    );
    // On a setting, and on a named value.
    let hover = client.at("textDocument/hover", LENET, "epochs", 0, 1, json!({}));
    assert!(hover["contents"]["value"].as_str().expect("markdown").contains("passes over the training data"));
    let hover = client.at("textDocument/hover", LENET, "features", 1, 2, json!({}));
    let text = hover["contents"]["value"].as_str().expect("markdown");
    assert!(text.contains("`features`") && text.contains("→ `[120]`"), "{text}");

    // One inlay hint per stage: 9 on the first pipeline, 3 and 1 on the others.
    let whole = json!({ "start": { "line": 0, "character": 0 }, "end": { "line": 99, "character": 0 } });
    let hints = client.request("textDocument/inlayHint", json!({ "textDocument": { "uri": URI }, "range": whole }));
    let labels: Vec<&str> =
        hints.as_array().expect("hints").iter().map(|h| h["label"].as_str().expect("label")).collect();
    assert_eq!(labels.len(), 13, "{labels:?}");
    assert_eq!(&labels[..3], ["[6, 28, 28]", "[6, 28, 28]", "[6, 14, 14]"]);
    assert_eq!(hints[0]["position"], position(LENET, LENET.find("padding = 2)").expect("found") + 12));

    // Definition of a value's use and of a layer label's use.
    let definition = client.at("textDocument/definition", LENET, "features |> dense(10)", 0, 3, json!({}));
    assert_eq!(definition["range"]["start"], position(LENET, LENET.find("=> features").expect("found") + 3));
    let definition = client.at("textDocument/definition", LENET, "tied = encoder", 0, 8, json!({}));
    assert_eq!(definition["range"]["start"], position(LENET, LENET.find("as encoder").expect("found") + 3));
    let references = client.at(
        "textDocument/references",
        LENET,
        "=> features",
        0,
        4,
        json!({ "context": { "includeDeclaration": true } }),
    );
    assert_eq!(references.as_array().expect("locations").len(), 3, "{references}");

    // Completion after `|> `: layers, with their required arguments as a snippet.
    let typing = LENET.replace("|> flatten", "|> ");
    client.change(2, &typing);
    client.diagnostics();
    let items = client.at("textDocument/completion", &typing, "|> \n", 0, 3, json!({}));
    let conv = items.as_array().expect("items").iter().find(|i| i["label"] == "conv2d").expect("conv2d offered");
    assert_eq!(conv["insertText"], "conv2d(${1:filters}, kernel = ${2:kernel})");
    assert!(
        conv["documentation"]["value"]
            .as_str()
            .expect("docs")
            .contains("`stride`: step between windows, or `[height, width]` (default 1)")
    );
    let items = client.at("textDocument/completion", &typing, "momentum = 0.9", 0, 0, json!({}));
    let labels: Vec<&str> =
        items.as_array().expect("items").iter().map(|i| i["label"].as_str().expect("label")).collect();
    assert!(labels.contains(&"nesterov") && labels.contains(&"lr"), "{labels:?}");

    // Symbols and formatting of the original text.
    client.change(3, LENET);
    client.diagnostics();
    let symbols = client.request("textDocument/documentSymbol", json!({ "textDocument": { "uri": URI } }));
    assert_eq!(symbols[0]["name"], "lenet");
    let names: Vec<&str> = symbols[0]["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["image", "digit", "features", "rebuilt", "logits"]);
    let messy = LENET.replace("|> conv2d(16, kernel = 5)", "|>conv2d( 16,kernel=5 )");
    client.change(4, &messy);
    client.diagnostics();
    let options = json!({ "tabSize": 2, "insertSpaces": true });
    let edits =
        client.request("textDocument/formatting", json!({ "textDocument": { "uri": URI }, "options": options }));
    assert_eq!(edits[0]["newText"], LENET);
}
