// A warmwire client in a second language, written from the README's wire protocol only:
// a ZeroMQ DEALER socket, one frame per message, each frame one MessagePack map.
//
//   node tests/node_client/check.mjs tcp://127.0.0.1:7400
//
// Checks a live warmwire and prints one line per check ("ok" or "FAIL" and why); exits 1 when
// any check failed, 2 on bad usage. It asserts warmwire's behaviour (frame types, notice
// kinds, ids), never the wording of an error. Every wait has a deadline and a failure says
// what it was waiting for.

import { randomUUID } from "node:crypto";
import { decode, encode } from "@msgpack/msgpack";
import { Dealer } from "zeromq";

const WAIT_MS = 15_000;            // one answer (or a batch of answers) must come within this
const WATCHDOG_MS = 180_000;       // the whole run; a hang anywhere else still ends the process
const CLIENTS = 20;                // concurrent DEALER sockets
const PER_CLIENT = 5;              // messages each of them sends at once
const RUN = randomUUID().slice(0, 8);  // chats of this run, told apart from any other run's

const endpoint = process.argv[2];
if (!endpoint || process.argv.length > 3) {
  console.error("usage: node check.mjs <endpoint>   (e.g. tcp://127.0.0.1:7400)");
  process.exit(2);
}

const watchdog = setTimeout(() => {
  console.log(`FAIL  the whole run took over ${WATCHDOG_MS / 1000} s (a check hung; see above which one started last)`);
  process.exit(1);
}, WATCHDOG_MS);

const newId = () => `node-${randomUUID()}`;

/** A short description of a frame, for failure messages. */
function describe(frame) {
  const shown = {};
  for (const key of ["type", "kind", "tier", "id", "chat", "text"]) {
    if (key in frame) {
      const value = frame[key];
      shown[key] = typeof value === "string" && value.length > 80 ? `${value.slice(0, 77)}...` : value;
    }
  }
  return JSON.stringify(shown);
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

/** Fails unless the frame is the notice of that kind carrying that id. */
function expectNotice(frame, kind, id, what) {
  expect(frame.type === "notice" && frame.kind === kind,
    `${what}: expected a notice of kind '${kind}', got ${describe(frame)}`);
  expect(frame.id === id, `${what}: the notice carries id ${JSON.stringify(frame.id)}, expected ${JSON.stringify(id)}`);
  expect(typeof frame.text === "string" && frame.text.length > 0, `${what}: the notice has no text saying why`);
}

/** Fails unless the frame is a reply to that message. */
function expectReply(frame, id, chat, what) {
  expect(frame.type === "reply", `${what}: expected a reply, got ${describe(frame)}`);
  expect(frame.id === id, `${what}: the reply carries id ${JSON.stringify(frame.id)}, expected ${JSON.stringify(id)}`);
  expect(frame.chat === chat, `${what}: the reply is for chat ${JSON.stringify(frame.chat)}, expected ${JSON.stringify(chat)}`);
  expect(typeof frame.text === "string" && frame.text.length > 0, `${what}: the reply has no text`);
}

class Client {
  constructor(label) {
    this.label = label;
    this.chat = `node-${RUN}-${label}`;
    this.sock = new Dealer({ linger: 0, sendTimeout: WAIT_MS });
    this.sock.connect(endpoint);
  }

  async sendRaw(bytes) {
    try {
      await this.sock.send(bytes);
    } catch (error) {
      if (error.code === "EAGAIN") throw new Error(`${this.label}: could not send within ${WAIT_MS / 1000} s`);
      throw error;
    }
  }

  /** Sends a chat message (any field may be overridden or given as bytes); returns its id. */
  async send(text, fields = {}) {
    const frame = { type: "chat", id: newId(), chat: this.chat, sender: "node-client", text, ...fields };
    await this.sendRaw(encode(frame));
    return frame.id;
  }

  /** The next frame, decoded; `what` names what is awaited, `deadline` is absolute (ms). */
  async recv(what, deadline = Date.now() + WAIT_MS) {
    this.sock.receiveTimeout = Math.max(1, deadline - Date.now());
    let parts;
    try {
      parts = await this.sock.receive();
    } catch (error) {
      if (error.code === "EAGAIN") throw new Error(`${this.label}: no frame within ${WAIT_MS / 1000} s waiting for ${what}`);
      throw error;
    }
    expect(parts.length === 1, `${what}: got a message of ${parts.length} frames; warmwire sends one frame per message`);
    let frame;
    try {
      frame = decode(parts[0]);
    } catch {
      throw new Error(`${what}: got ${parts[0].length} bytes that are not MessagePack`);
    }
    expect(frame !== null && typeof frame === "object" && !Array.isArray(frame) && !(frame instanceof Uint8Array),
      `${what}: got a frame that is not a map`);
    expect(typeof frame.type === "string", `${what}: got a map with no string 'type': ${describe(frame)}`);
    return frame;
  }

  /** The final answer to message `id` (queued/progress notices skipped); any frame for
   * another id fails: this client has nothing else outstanding. */
  async answer(id, what, deadline = Date.now() + WAIT_MS) {
    for (;;) {
      const frame = await this.recv(what, deadline);
      expect(frame.id === id, `${what}: got a frame for another id: ${describe(frame)}`);
      if (frame.type === "notice" && (frame.kind === "queued" || frame.kind === "progress")) continue;
      return frame;
    }
  }

  close() {
    this.sock.close();
  }
}

// -- the checks: each opens its own sockets, so a failing one leaves nothing for the next --
const checks = [];
const check = (name, fn) => checks.push({ name, fn });

check("inline reply", async (open) => {
  const client = open("inline");
  const id = await client.send("hello");
  const frame = await client.answer(id, "the reply to 'hello'");
  expectReply(frame, id, client.chat, "'hello'");
  expect(frame.tier === "inline", `'hello': expected tier 'inline', got ${describe(frame)}`);
  return `tier inline, same id, ${JSON.stringify(frame.text)}`;
});

check("resend", async (open) => {
  // /status reports the router's message count: had the resend been processed again, its
  // answer would differ from the first one.
  const client = open("resend");
  const id = newId();
  const bytes = encode({ type: "chat", id, chat: client.chat, sender: "node-client", text: "/status" });
  await client.sendRaw(bytes);
  const first = await client.answer(id, "the reply to '/status'");
  expectReply(first, id, client.chat, "'/status'");
  await client.sendRaw(bytes);
  const again = await client.answer(id, "the answer to the resent '/status'");
  expectReply(again, id, client.chat, "the resent '/status'");
  expect(again.tier === first.tier && again.text === first.text,
    `the resend got another answer (processed twice?): first ${describe(first)}, then ${describe(again)}`);
  // Nothing more for that id: the next frame is the answer to a new message sent after it.
  const next = await client.send("hello");
  const frame = await client.recv("the reply to 'hello' sent after the resend");
  expect(frame.id !== id, `the resent message was answered more than once: ${describe(frame)}`);
  expectReply(frame, next, client.chat, "'hello' after the resend");
  return "same id, same answer, answered once";
});

check("bad frame: garbage bytes", async (open) => {
  const client = open("garbage");
  const garbage = [
    Uint8Array.of(0xc1),                                  // a byte MessagePack never uses
    new TextEncoder().encode("this is not MessagePack"),  // text: an int, then trailing bytes
    Uint8Array.of(0x84, 0xa4, 0x74, 0x79),               // a map cut off in its first key
    Uint8Array.of(0xde, 0xff, 0xff),                      // a map claiming 65,535 entries
  ];
  for (const [i, bytes] of garbage.entries()) {
    await client.sendRaw(bytes);
    // No id can be read from these: README says the notice's id is "".
    expectNotice(await client.recv(`the answer to garbage frame ${i + 1}`), "error", "", `garbage frame ${i + 1}`);
  }
  return `${garbage.length} frames, each an error notice with id ""`;
});

check("bad frame: map with no type", async (open) => {
  const client = open("notype");
  const id = newId();
  await client.sendRaw(encode({ id, chat: client.chat, sender: "node-client", text: "hello" }));
  expectNotice(await client.recv("the answer to a map with no 'type'"), "error", id, "a map with no 'type'");
  return "error notice, same id";
});

check("bad frame: id reused with another text", async (open) => {
  const client = open("conflict");
  const id = await client.send("hello");
  const original = await client.answer(id, "the reply to 'hello'");
  expectReply(original, id, client.chat, "'hello'");
  await client.send("thanks!", { id });
  expectNotice(await client.recv("the answer to the same id with another text"), "error", id,
    "the same id with another text");
  // The conflicting frame changed nothing: the original, resent, still gets its answer.
  await client.send("hello", { id });
  const again = await client.answer(id, "the answer to the original resent after the conflict");
  expectReply(again, id, client.chat, "the original resent after the conflict");
  expect(again.text === original.text, `the original got another answer after the conflict: ${describe(again)}`);
  return "error notice, same id; the original still answered as before";
});

check("bad frame: bin instead of str", async (open) => {
  const client = open("bin");
  const bin = (text) => new TextEncoder().encode(text);
  const fields = ["type", "id", "chat", "sender", "text"];
  const cases = [...fields.map((field) => [field]), fields];
  for (const asBin of cases) {
    const frame = { type: "chat", id: newId(), chat: client.chat, sender: "node-client", text: "hello" };
    const id = frame.id;
    for (const field of asBin) frame[field] = bin(frame[field]);
    await client.sendRaw(encode(frame));
    const what = `a chat frame with ${asBin.length === fields.length ? "every string" : `'${asBin[0]}'`} as bin`;
    // The notice carries the id when it was readable (a str), else "".
    expectNotice(await client.recv(`the answer to ${what}`), "error", asBin.includes("id") ? "" : id, what);
    if (asBin.length === 1 && asBin[0] === "text") {
      // Refused means not accepted: the same id, now with a str text, is a new message.
      await client.send("hello", { id });
      const frame = await client.answer(id, "the reply to the same id sent again with a str text");
      expectReply(frame, id, client.chat, "the same id sent again with a str text");
    }
  }
  return `${cases.length} frames (each field alone, then all), each an error notice`;
});

check(`${CLIENTS} concurrent clients`, async (open) => {
  const texts = ["hello", "/ping", "thanks!", "hi", "/help"];
  const clients = Array.from({ length: CLIENTS }, (_, i) => open(`client${String(i).padStart(2, "0")}`));
  const owner = new Map();  // id -> the client that sent it
  const run = async (client) => {
    const pending = new Set();
    for (let n = 0; n < PER_CLIENT; n++) {
      const id = newId();
      owner.set(id, client.label);  // before it is sent: its answer may come at once
      pending.add(id);
      await client.send(texts[n % texts.length], { id });
    }
    const deadline = Date.now() + WAIT_MS;
    while (pending.size > 0) {
      const frame = await client.recv(`${pending.size} of its ${PER_CLIENT} answers`, deadline);
      const from = owner.get(frame.id);
      expect(from === undefined || from === client.label,
        `${client.label} got an answer to ${from}'s message: ${describe(frame)}`);
      expect(pending.has(frame.id),
        `${client.label} got a frame for none of its outstanding ids (duplicate or stray): ${describe(frame)}`);
      if (frame.type === "notice" && (frame.kind === "queued" || frame.kind === "progress")) continue;
      expectReply(frame, frame.id, client.chat, `${client.label}'s message`);
      pending.delete(frame.id);
    }
    // Nothing more: the next frame is the answer to a message sent after all were answered.
    const last = await client.send("hello");
    const frame = await client.recv(`${client.label}: the reply to a last 'hello'`);
    expect(frame.id === last, `${client.label} got a frame after all its answers: ${describe(frame)}`);
    expectReply(frame, last, client.chat, `${client.label}'s last 'hello'`);
  };
  const results = await Promise.allSettled(clients.map(run));
  const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
  expect(failed.length === 0, `${failed.length} of ${CLIENTS} clients failed: ${failed.slice(0, 3).join("; ")}`);
  return `${CLIENTS} x ${PER_CLIENT} messages, each answered once, to its own sender only`;
});

let failures = 0;
for (const { name, fn } of checks) {
  const opened = [];
  const open = (label) => {
    const client = new Client(label);
    opened.push(client);
    return client;
  };
  const started = performance.now();
  try {
    const detail = await fn(open);
    console.log(`ok    ${name}: ${detail} (${Math.round(performance.now() - started)} ms)`);
  } catch (error) {
    failures++;
    console.log(`FAIL  ${name}: ${error.message}`);
  } finally {
    for (const client of opened) client.close();
  }
}
clearTimeout(watchdog);
console.log(`${checks.length - failures} of ${checks.length} checks passed against ${endpoint}`);
process.exitCode = failures ? 1 : 0;
