"use strict";
/* A small Block Kit renderer for the demo page: Slack's mrkdwn, message and Home blocks
 * (section, header, context, divider, actions with buttons) and a modal with input blocks
 * (external_select with type-ahead, plain_text_input), field errors under their field.
 * Everything is built with text nodes: nothing the bridge or a phone sends becomes HTML.
 * Used by page.js; no dependencies. */
const EMOJI = { iphone: "📱", warning: "⚠️", white_check_mark: "✅", x: "❌",
  hourglass: "⌛", hourglass_flowing_sand: "⏳", large_green_circle: "🟢", red_circle: "🔴",
  "+1": "👍", eyes: "👀", email: "📧", incoming_envelope: "📨", outbox_tray: "📤",
  white_circle: "⚪", grey_question: "❔", no_entry_sign: "🚫", repeat: "🔁" };
const CHANNEL_NAMES = {};  // channel ID -> "#name", filled by page.js, for <#C…> references
function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}
function unescapeSlack(text) {
  return text.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
}
function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit",
                                                          second: "2-digit"});
}
// Slack mrkdwn, enough for the bridge's messages: *bold*, _italic_, `code`, :emoji:,
// <!date^…|…>, <url|label>. Built with text nodes only: nothing typed can become HTML.
function mrkdwn(text) {
  const out = document.createDocumentFragment();
  if (/(^|\n)>/.test(text)) {  // "> quoted" lines, as the Home quotes a text
    text.split("\n").forEach((line, i) => {
      if (i) out.append(el("br"));
      if (line.startsWith(">")) {
        const quote = el("span", "quote");
        quote.append(mrkdwn(line.slice(1)));
        out.append(quote);
      } else out.append(mrkdwn(line));
    });
    return out;
  }
  const pattern = /(\*[^*\n]+\*|_[^_\n]+_|`[^`]+`|:[a-z0-9_+-]+:|<[^>\n]+>)/g;
  let last = 0, match;
  while ((match = pattern.exec(text)) !== null) {
    if (match.index > last) out.append(unescapeSlack(text.slice(last, match.index)));
    const token = match[0], inner = token.slice(1, -1);
    if (token[0] === "*") out.append(el("b", "", unescapeSlack(inner)));
    else if (token[0] === "_") out.append(el("i", "", unescapeSlack(inner)));
    else if (token[0] === "`") out.append(el("code", "", unescapeSlack(inner)));
    else if (token[0] === ":") out.append(EMOJI[inner] || token);
    else if (inner.startsWith("!date^")) {
      const parts = inner.split("^");
      out.append(clock(Number(parts[1])));
    } else if (inner.startsWith("#")) {
      const [target, label] = inner.slice(1).split("|");
      out.append(label ? "#" + label : (CHANNEL_NAMES[target] || "#" + target));
    } else {
      const [target, label] = inner.split("|");
      out.append(unescapeSlack(label || target));
    }
    last = match.index + token.length;
  }
  if (last < text.length) out.append(unescapeSlack(text.slice(last)));
  return out;
}
function plainText(obj) {
  return obj && typeof obj.text === "string" ? obj.text : "";
}
// A button as Slack draws it; `onButton(element, block)` is what pressing it does.
function buttonNode(element, block, onButton) {
  const button = el("button", "bk-button" + (element.style ? " " + element.style : ""),
                    plainText(element.text));
  button.type = "button";
  button.dataset.actionId = element.action_id || "";
  button.addEventListener("click", () => {
    if (button.disabled || !onButton) return;
    button.disabled = true;  // a double click is one press, as in Slack's client
    Promise.resolve(onButton(element, block)).finally(() => { button.disabled = false; });
  });
  return button;
}
function blockNodes(blocks, onButton) {
  const nodes = [];
  for (const block of blocks) {
    if (block.type === "context") {
      const line = el("div", "context");
      (block.elements || []).forEach((item, i) => {
        if (i) line.append(" ");
        line.append(item.type === "mrkdwn" ? mrkdwn(item.text || "") : (item.text || ""));
      });
      nodes.push(line);
    } else if ((block.type === "section" || block.type === "header") && block.text) {
      const plain = block.text.type === "plain_text";
      const node = el("div", "section" + (plain && block.type === "section" ? " plain" : ""));
      if (plain) node.textContent = block.text.text; else node.append(mrkdwn(block.text.text));
      if (block.type === "header") node.style.fontWeight = "700";
      nodes.push(node);
    } else if (block.type === "divider") {
      nodes.push(el("hr"));
    } else if (block.type === "actions") {
      const row = el("div", "bk-actions");
      row.dataset.blockId = block.block_id || "";
      for (const element of block.elements || []) {
        if (element.type === "button") row.append(buttonNode(element, block, onButton));
      }
      nodes.push(row);
    }
  }
  return nodes;
}

// A modal as Slack shows it. `handlers.suggest(blockId, actionId, query)` resolves to the
// options to show; `handlers.submit(values)` and `handlers.cancel()` are Send and Cancel.
// Returns {node, values(), showErrors(errors)}; `values()` is what Slack puts in view.state.
function modalNode(view, handlers) {
  const inputs = [];  // {block, element, read()}
  const errorLines = {};
  const dialog = el("div", "bk-modal");
  dialog.setAttribute("role", "dialog");
  dialog.dataset.viewId = view.id || "";
  dialog.dataset.callbackId = view.callback_id || "";
  const head = el("div", "bk-modal-head");
  head.append(el("h3", "", plainText(view.title)));
  const close = el("button", "bk-close", "×");
  close.type = "button";
  close.title = "Close";
  close.addEventListener("click", () => handlers.cancel());
  head.append(close);
  const body = el("div", "bk-modal-body");
  for (const block of view.blocks || []) {
    if (block.type !== "input") {
      body.append(...blockNodes([block]));
      continue;
    }
    const field = el("div", "bk-input");
    field.dataset.blockId = block.block_id || "";
    const label = el("label", "bk-label", plainText(block.label));
    if (block.optional) label.append(el("span", "bk-optional", " (optional)"));
    field.append(label);
    const element = block.element || {};
    let read = () => ({type: element.type});
    if (element.type === "plain_text_input") {
      const box = el(element.multiline ? "textarea" : "input", "bk-text");
      if (!element.multiline) box.type = "text";
      if (element.max_length) box.maxLength = element.max_length;
      box.placeholder = plainText(element.placeholder);
      box.value = element.initial_value || "";
      field.append(box);
      read = () => ({type: element.type, value: box.value || null});
    } else if (element.type === "external_select") {
      const picker = selectNode(block, element, handlers);
      field.append(picker.node);
      read = () => ({type: element.type, selected_option: picker.selected()});
    } else {
      field.append(el("div", "context", `(${element.type} is not shown in the demo)`));
    }
    const error = el("div", "bk-error");
    errorLines[block.block_id] = error;
    field.append(error);
    inputs.push({block, element, read});
    body.append(field);
  }
  const foot = el("div", "bk-modal-foot");
  if (view.close) {
    const cancel = el("button", "bk-button", plainText(view.close));
    cancel.type = "button";
    cancel.dataset.role = "cancel";
    cancel.addEventListener("click", () => handlers.cancel());
    foot.append(cancel);
  }
  const values = () => {
    const out = {};
    for (const input of inputs) {
      out[input.block.block_id] = {[input.element.action_id]: input.read()};
    }
    return out;
  };
  if (view.submit) {
    const send = el("button", "bk-button primary", plainText(view.submit));
    send.type = "button";
    send.dataset.role = "submit";
    send.addEventListener("click", async () => {
      if (send.disabled) return;
      send.disabled = true;
      try { await handlers.submit(values()); } finally { send.disabled = false; }
    });
    foot.append(send);
  }
  dialog.append(head, body, foot);
  const showErrors = errors => {
    for (const [blockId, line] of Object.entries(errorLines)) {
      line.textContent = (errors || {})[blockId] || "";
      line.parentElement.classList.toggle("has-error", Boolean(line.textContent));
    }
  };
  return {node: dialog, values, showErrors};
}

// An external_select: type to ask the app for options (block_suggestion), pick one.
function selectNode(block, element, handlers) {
  const node = el("div", "bk-select");
  const input = el("input", "bk-select-input");
  input.type = "text";
  input.placeholder = plainText(element.placeholder);
  input.setAttribute("aria-label", plainText(block.label));
  const list = el("div", "bk-options");
  node.append(input, list);
  let selected = element.initial_option || null;
  if (selected) input.value = plainText(selected.text);
  let asked = 0;
  const ask = async () => {
    const mine = ++asked;
    const query = input.value;
    if (query.length < (element.min_query_length ?? 3)) return;
    list.replaceChildren(el("div", "bk-option-note", "Loading…"));
    list.classList.add("open");
    const options = await handlers.suggest(block.block_id, element.action_id, query);
    if (mine !== asked) return;  // a later keystroke asked again
    list.replaceChildren();
    list.dataset.query = query;  // what these options answer
    if (!options.length) list.append(el("div", "bk-option-note", "No results"));
    for (const option of options) {
      const item = el("div", "bk-option", plainText(option.text));
      item.dataset.value = option.value;
      item.addEventListener("mousedown", event => {
        event.preventDefault();  // keep the focus: the blur below would close the list first
        selected = option;
        input.value = plainText(option.text);
        list.classList.remove("open");
      });
      list.append(item);
    }
  };
  let timer = null;
  input.addEventListener("input", () => {
    selected = null;  // typing again un-picks, as in Slack
    clearTimeout(timer);
    timer = setTimeout(ask, 150);
  });
  input.addEventListener("focus", ask);
  input.addEventListener("blur", () => list.classList.remove("open"));
  return {node, selected: () => selected};
}
