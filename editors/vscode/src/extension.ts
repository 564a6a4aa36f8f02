// Starts `dlspec lsp` (the language server of the dlspec package) for .dls files.
import * as vscode from "vscode";
import { LanguageClient, LanguageClientOptions, ServerOptions, TransportKind } from "vscode-languageclient/node";

let client: LanguageClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const config = vscode.workspace.getConfiguration("dlspec");
  const [command, ...args] = config.get<string[]>("server.command", ["dlspec", "lsp"]);
  const serverOptions: ServerOptions = { command, args, transport: TransportKind.stdio };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file", language: "dlspec" }],
    initializationOptions: { inlayHints: config.get<boolean>("inlayHints", true) },
    synchronize: { configurationSection: "dlspec" },
  };
  client = new LanguageClient("dlspec", "dlspec language server", serverOptions, clientOptions);
  context.subscriptions.push(client);
  await client.start();
}

export async function deactivate(): Promise<void> {
  if (client !== undefined) {
    await client.stop();
  }
}
