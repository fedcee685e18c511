"use strict";
let version = -1;
let thread = null;  // {channel, ts}: the composer replies in this thread
const built = { channels: "", phones: "", home: "", modal: "", errors: "" };
let modal = null;  // the modal on screen: {id, showErrors}

function snippet(message) {
  const plain = message.blocks.filter(b => b.type === "section" && b.text).map(b => b.text.text);
  const text = unescapeSlack(plain.length ? plain.join(" ") : message.text).replace(/\s+/g, " ");
  return text.length > 60 ? text.slice(0, 59) + "…" : text;
}
function openThread(channelId, message) {
  thread = {channel: channelId, ts: message.ts};
  document.getElementById("command-channel").value = channelId;
  document.getElementById("thread-label").textContent =
    `Replying in the thread of “${snippet(message)}”`;
  document.getElementById("thread-banner").className = "on";
  const input = document.getElementById("command-text");
  input.placeholder = "reply in the thread";
  input.focus();
}
function leaveThread() {
  thread = null;
  document.getElementById("thread-banner").className = "";
  document.getElementById("command-text").placeholder = "/sip alice hello";
}
function messageNode(message, channelId, top) {
  const node = el("div", "msg" + (message.ephemeral ? " ephemeral" : ""));
  const head = el("div");
  head.append(el("span", "who", message.author === "bridge" ? "bridge (app)" : message.author));
  head.append(el("span", "when", clock(Number(message.ts)) + (message.edited ? " (edited)" : "")));
  if (message.ephemeral) head.append(el("span", "only", "· only visible to you"));
  node.append(head);
  const press = (element, block) => post("/ui/press", {
    where: "message", channel: channelId, ts: message.ts,
    action: {action_id: element.action_id, block_id: block.block_id, value: element.value,
             text: element.text}});
  if (message.blocks.length) node.append(...blockNodes(message.blocks, press));
  else {
    const body = el("div", "section");
    body.append(mrkdwn(message.text));
    node.append(body);
  }
  if (message.reactions.length) {
    const reactions = el("div", "reactions");
    message.reactions.forEach(name => reactions.append(el("span", "", EMOJI[name] || `:${name}:`)));
    node.append(reactions);
  }
  if (message.replies && message.replies.length) {
    const replies = el("div", "replies");
    replies.append(el("div", "when", `${message.replies.length} repl` +
                                      (message.replies.length === 1 ? "y" : "ies")));
    message.replies.forEach(reply => replies.append(messageNode(reply, channelId, false)));
    node.append(replies);
  }
  if (!message.ephemeral) {
    const links = el("div", "msg-actions");
    if (top) {
      const reply = el("button", "reply-link", "Reply in thread");
      reply.type = "button";
      reply.addEventListener("click", () => openThread(channelId, message));
      links.append(reply);
    }
    // Slack's "More actions" menu on a message, with the bridge's message shortcut in it.
    const shortcut = el("button", "shortcut-link", "⋮ Text this to a phone…");
    shortcut.type = "button";
    shortcut.title = "message shortcut (More actions)";
    shortcut.addEventListener("click", () => post("/ui/message-shortcut",
                                                  {channel: channelId, ts: message.ts}));
    links.append(shortcut);
    node.append(links);
  }
  return node;
}
function renderChannels(channels) {
  channels.forEach(c => { CHANNEL_NAMES[c.id] = c.name; });
  const box = document.getElementById("channels");
  box.replaceChildren();
  for (const channel of channels) {
    const card = el("div", "card channel");
    card.dataset.channel = channel.id;
    const title = el("div", "title", channel.name);
    title.append(el("small", "", channel.purpose));
    const feed = el("div", "feed");
    if (!channel.messages.length) feed.append(el("div", "empty", "No messages yet."));
    channel.messages.forEach(message => feed.append(messageNode(message, channel.id, true)));
    card.append(title, feed);
    box.append(card);
    feed.scrollTop = feed.scrollHeight;
  }
  const select = document.getElementById("command-channel");
  const chosen = select.value;
  const names = channels.map(c => c.id).join();
  if (select.dataset.names !== names) {
    select.replaceChildren(...channels.map(c => {
      const option = el("option", "", c.name);
      option.value = c.id;
      return option;
    }));
    select.dataset.names = names;
    if (chosen) select.value = chosen;
  }
}
function renderPhones(phones) {
  const box = document.getElementById("phones");
  for (const phone of phones) {
    let card = box.querySelector(`[data-phone="${phone.name}"]`);
    if (!card) {
      card = el("div", "card phone");
      card.dataset.phone = phone.name;
      const title = el("div", "title", "📱 " + phone.name);
      title.append(el("small", "", `${phone.address} · posts to ${phone.channel}`));
      const form = el("form");
      form.autocomplete = "off";
      const input = el("input");
      input.type = "text";
      input.placeholder = `text from ${phone.name}'s phone`;
      input.setAttribute("aria-label", `text from ${phone.name}`);
      form.append(input, el("button", "", "Send"));
      form.addEventListener("submit", event => {
        event.preventDefault();
        const text = input.value;
        if (!text) return;
        input.value = "";
        post(`/phones/${phone.name}/send`, {text});
      });
      const power = el("button", "power");
      power.type = "button";
      power.addEventListener("click", () => post(`/phones/${phone.name}/power`,
                                                 {on: power.dataset.on !== "true"}));
      title.append(el("span", "presence"), power);
      card.append(title, el("div", "feed"), form);
      box.append(card);
    }
    const power = card.querySelector(".power");
    power.dataset.on = String(phone.on);
    power.textContent = phone.on ? "Switch off" : "Switch on";
    power.title = phone.on ? "unregister from Asterisk (the phone goes offline)" :
                             "register with Asterisk again";
    card.querySelector(".presence").textContent = phone.on ? "🟢 registered" : "⚪ off";
    const feed = card.querySelector(".feed");
    feed.replaceChildren();
    if (!phone.texts.length) feed.append(el("div", "empty", "No texts yet."));
    for (const text of phone.texts) {
      const bubble = el("div", "bubble " + text.direction, text.body);
      const meta = text.direction === "in" ? "received" : text.status;
      bubble.append(el("span", "meta", `${clock(text.at)} · ${meta}`));
      feed.append(bubble);
    }
    feed.scrollTop = feed.scrollHeight;
  }
}
function renderStatus(state) {
  const status = document.getElementById("status");
  status.replaceChildren();
  const item = (up, label) => {
    status.append(el("span", "dot" + (up ? " up" : "")), label);
  };
  item(state.bridge.running, state.bridge.running ? "bridge running" : "bridge stopped");
  item(state.asterisk.running, state.asterisk.running ?
       `Asterisk (AMI ${state.asterisk.ami_port}, SIP ${state.asterisk.sip_port})` :
       "Asterisk stopped");
}
async function post(path, body) {
  const response = await fetch(path, {method: "POST", body: JSON.stringify(body),
                                      headers: {"Content-Type": "application/json"}});
  refresh();
  return response.json();
}
async function refresh() {
  try {
    const response = await fetch("/state", {cache: "no-store"});
    const state = await response.json();
    if (state.version === version) return;
    version = state.version;
    renderStatus(state);
    const channels = JSON.stringify(state.channels), phones = JSON.stringify(state.phones);
    if (channels !== built.channels) { renderChannels(state.channels); built.channels = channels; }
    if (phones !== built.phones) { renderPhones(state.phones); built.phones = phones; }
    renderHome(state.views.home);
    renderModal(state.views.modal);
    const refused = document.getElementById("refusals");
    refused.textContent = state.views.refusals.length ?
      "Slack refused: " + state.views.refusals[state.views.refusals.length - 1] : "";
  } catch (error) {
    document.getElementById("status").textContent = "the demo is not running (" + error + ")";
    version = -1;
  }
}
document.getElementById("command-form").addEventListener("submit", event => {
  event.preventDefault();
  const input = document.getElementById("command-text");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  const channel = document.getElementById("command-channel").value;
  if (thread && thread.channel !== channel) leaveThread();
  post("/command", {channel, text, thread_ts: thread ? thread.ts : null});
});
// ------------------------------------------------------------------ Home tab and the modal
function showTab(name) {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.classList.toggle("on", tab.dataset.tab === name);
  }
  document.getElementById("channels-tab").hidden = name !== "channels";
  document.getElementById("home-tab").hidden = name !== "home";
  if (name === "home") post("/ui/home", {});  // Slack sends the app app_home_opened
}
function renderHome(home) {
  const text = JSON.stringify(home);
  if (text === built.home) return;
  built.home = text;
  const box = document.getElementById("home-view");
  box.replaceChildren();
  if (!home) {
    box.append(el("div", "empty", "The app has not published a Home view yet."));
    return;
  }
  const press = (element, block) => post("/ui/press", {
    where: "home", action: {action_id: element.action_id, block_id: block.block_id,
                            value: element.value, text: element.text}});
  box.append(...blockNodes(home.blocks, press));
}
async function suggest(blockId, actionId, value) {
  const answer = await post("/ui/suggest", {block_id: blockId, action_id: actionId, value});
  return answer.options || [];
}
function renderModal(open) {
  const layer = document.getElementById("modal-layer");
  if (!open) {
    if (modal) { layer.replaceChildren(); layer.hidden = true; modal = null; }
    return;
  }
  if (!modal || modal.id !== open.view.id || built.modal !== JSON.stringify(open.view)) {
    const shown = modalNode(open.view, {
      suggest,
      submit: values => post("/ui/submit", {values}),
      cancel: () => post("/ui/cancel", {}),
    });
    layer.replaceChildren(shown.node);
    layer.hidden = false;
    modal = {id: open.view.id, showErrors: shown.showErrors};
    built.modal = JSON.stringify(open.view);
    built.errors = "";
    const first = shown.node.querySelector("input, textarea");
    if (first) first.focus();
  }
  const errors = JSON.stringify(open.errors);
  if (errors !== built.errors) { modal.showErrors(open.errors); built.errors = errors; }
}
for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => showTab(tab.dataset.tab));
}
document.getElementById("shortcut-button").addEventListener("click", () => {
  const menu = document.getElementById("shortcut-menu");
  menu.hidden = !menu.hidden;
});
document.getElementById("shortcut-compose").addEventListener("click", () => {
  document.getElementById("shortcut-menu").hidden = true;
  post("/ui/shortcut", {});
});
document.getElementById("thread-cancel").addEventListener("click", leaveThread);
document.getElementById("command-channel").addEventListener("change", leaveThread);
refresh();
setInterval(refresh, 500);
