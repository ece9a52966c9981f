// Starts `nnc lsp` for .nn files; everything else comes from the server.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const command = vscode.workspace.getConfiguration("nnc").get("path", "nnc");
  client = new LanguageClient(
    "nnc",
    "nnc",
    { command, args: ["lsp"] },
    { documentSelector: [{ language: "nn" }] }
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
