// The WeAll node dashboard and chain explorer.
//
// Plain JavaScript with no dependencies. It only sends GET requests to the
// node that served it, and every text it shows goes into the page as a text
// node (textContent), never as HTML, so nothing the chain stores can inject
// markup. Views are chosen by the URL fragment:
//
//   #/                 overview: node status and the latest blocks
//   #/blocks/N         the blocks up to height N
//   #/block/N          one block with its transactions and receipts
//   #/tx/ID            one transaction
//   #/account/@ID      an account and its posts
//   #/content/ID       a post with its comments, or a comment
//   #/pin/ID           a pin with its targets and confirmations
//   #/cid/CID          the pin of a media CID
//
// On a follower node the overview starts with the follower's sync state.
// The status and the current view are fetched again every POLL_MS; a view is
// redrawn only when its data changed, so scrolling and selection survive.
"use strict";

(() => {
  const POLL_MS = 2000;
  const PAGE_BLOCKS = 20;
  const TX_ID_LENGTH = 53;

  // ---- DOM helpers ---------------------------------------------------------

  // el("td", {class: "num"}, "text", childNode): strings become text nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fragment(...parts) {
    return parts.map((part) => encodeURIComponent(String(part))).join("/");
  }

  function link(route, text, attrs) {
    return el("a", { href: "#/" + route, ...attrs }, text);
  }

  const links = {
    block: (height, text) => link(fragment("block", height), text ?? String(height)),
    tx: (id, text) => link(fragment("tx", id), text ?? shortHash(id), { class: "hash", title: id }),
    account: (id) => link(fragment("account", id), id, { class: "account" }),
    content: (id, text) => link(fragment("content", id), text ?? shortHash(id), { class: "hash", title: id }),
    pin: (id, text) => link(fragment("pin", id), text ?? shortHash(id), { class: "hash", title: id }),
    cid: (cid) => link(fragment("cid", cid), shortHash(cid, 16), { class: "hash", title: cid }),
  };

  function shortHash(value, length = 12) {
    const text = String(value ?? "");
    return text.length > length + 1 ? text.slice(0, length) + "…" : text;
  }

  function hashText(value) {
    return el("span", { class: "hash", title: value ?? "" }, shortHash(value ?? "–", 20));
  }

  function badge(text, kind) {
    return el("span", { class: "badge " + (kind || String(text).toLowerCase()) }, text);
  }

  function table(headings, rows, attrs) {
    return el(
      "table",
      attrs || {},
      el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: headings.length, class: "muted" }, "none"))),
    );
  }

  // A definition list from [label, value] pairs; a null value shows "–".
  function facts(pairs, attrs) {
    const list = el("dl", { class: "facts", ...attrs });
    for (const [label, value, id] of pairs) {
      list.append(el("dt", {}, label), el("dd", id ? { id } : {}, value ?? "–"));
    }
    return list;
  }

  function card(title, ...body) {
    return el("section", { class: "card" }, el("h2", {}, title), ...body);
  }

  function wideCard(title, ...body) {
    const section = card(title, ...body);
    section.classList.add("wide");
    return section;
  }

  function pre(value) {
    return el("pre", { class: "json" }, JSON.stringify(value, null, 2));
  }

  // ---- formatting ----------------------------------------------------------

  function formatTime(ms) {
    if (typeof ms !== "number") return "–";
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function formatDuration(seconds) {
    if (typeof seconds !== "number") return "–";
    if (seconds < 60) return seconds.toFixed(seconds < 10 ? 1 : 0) + " s";
    const whole = Math.floor(seconds);
    if (whole < 3600) return Math.floor(whole / 60) + " min " + String(whole % 60).padStart(2, "0") + " s";
    if (whole < 86400) return Math.floor(whole / 3600) + " h " + String(Math.floor((whole % 3600) / 60)).padStart(2, "0") + " min";
    return Math.floor(whole / 86400) + " d " + Math.floor((whole % 86400) / 3600) + " h";
  }

  function formatBytes(count) {
    if (typeof count !== "number") return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = count;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit === 0 ? String(value) : value.toFixed(1)) + " " + units[unit];
  }

  function plural(count, noun) {
    return count + " " + noun + (count === 1 ? "" : "s");
  }

  function ago(ms, nowMs) {
    if (typeof ms !== "number") return "–";
    return formatDuration(Math.max(0, (nowMs - ms) / 1000)) + " ago";
  }

  function describeExit(lastExit) {
    if (!lastExit) return "–";
    let text = "exited";
    if (lastExit.signal) text = "killed by " + lastExit.signal;
    else if (lastExit.code !== null && lastExit.code !== undefined) text = "exit code " + lastExit.code;
    return lastExit.reason ? text + " (" + lastExit.reason + ")" : text;
  }

  // ---- data ----------------------------------------------------------------

  class HttpError extends Error {
    constructor(status, body) {
      const error = body && body.error ? body.error : {};
      super(error.message || "HTTP " + status);
      this.status = status;
      this.code = error.code || "http_" + status;
    }
  }

  async function getJson(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) throw new HttpError(response.status, body);
    return body;
  }

  // Returns null on 404, so a view can show its own "not found" message.
  async function getOptional(path) {
    try {
      return await getJson(path);
    } catch (error) {
      if (error instanceof HttpError && error.status === 404) return null;
      throw error;
    }
  }

  function api(...parts) {
    return "/v1/" + parts.map((part) => encodeURIComponent(String(part))).join("/");
  }

  // ---- overview ------------------------------------------------------------

  function chainCard(status) {
    const head = status.head;
    const rate = status.block_rate;
    return card(
      "Chain",
      facts([
        ["chain id", status.chain_id],
        ["mode", badge(status.mode, status.mode === "genesis" ? "ok" : "dev")],
        ["role", status.role, "status-role"],
        ["version", status.version],
        ["height", head ? links.block(head.height) : null, "status-height"],
        ["tip", head ? hashText(head.hash) : null],
        ["last block", head ? formatTime(head.timestamp_ms) + " (" + formatDuration(head.age_s) + " ago)" : null],
        ["block rate", rate ? rate.blocks_per_min + " blocks/min over the last " + plural(rate.blocks, "block") : null],
        ["transactions", rate ? rate.txs_per_s + " tx/s" : null],
        ["mempool", status.mempool ? status.mempool.pending + " pending" : null, "status-mempool"],
      ]),
    );
  }

  // ---- follower ------------------------------------------------------------

  const FOLLOWER_STATES = {
    caught_up: ["caught up", "ok"],
    syncing: ["syncing", "pending"],
    checking: ["checking", "pending"],
    unreachable: ["upstream unreachable", "bad"],
    rejected: ["upstream rejected", "bad"],
    unavailable: ["follower not answering", "bad"],
  };

  function followerHeights(follower) {
    if (typeof follower.height !== "number") return null;
    if (typeof follower.upstream_height !== "number") return follower.height + " (upstream height unknown)";
    const behind = follower.blocks_behind ? ", " + plural(follower.blocks_behind, "block") + " behind" : "";
    return follower.height + " of " + follower.upstream_height + behind;
  }

  function followerRate(follower) {
    const parts = [];
    if (typeof follower.sync_blocks_per_s === "number") parts.push(follower.sync_blocks_per_s + " blocks/s");
    if (typeof follower.sync_tx_per_s === "number") parts.push(follower.sync_tx_per_s + " tx/s");
    if (parts.length) return parts.join(", ");
    if (typeof follower.last_sync_tx_per_s === "number") return "last catch-up " + follower.last_sync_tx_per_s + " tx/s";
    return null;
  }

  function followerRejection(rejected, nowMs) {
    if (!rejected) return null;
    const where = typeof rejected.height === "number" ? "at height " + rejected.height : "at the chain identity check";
    return el(
      "span",
      { id: "follower-rejected" },
      badge("rejected", "bad"),
      " " + where + ": " + rejected.reason + " (" + ago(rejected.at_ms, nowMs) + "). ",
      "Nothing more is synced until the upstream is fixed or replaced and the follower restarted.",
    );
  }

  function followerCard(status) {
    const follower = status.follower;
    const [label, kind] = FOLLOWER_STATES[follower.state] || [String(follower.state), "bad"];
    const since = typeof follower.state_since_ms === "number" ? " for " + formatDuration(Math.max(0, (status.now_ms - follower.state_since_ms) / 1000)) : "";
    const section = wideCard(
      "Follower",
      facts([
        ["state", el("span", { id: "follower-state", "data-state": follower.state }, badge(label, kind), since)],
        ["upstream", follower.upstream ? el("span", { class: "hash", id: "follower-upstream" }, follower.upstream) : null],
        ["height", followerHeights(follower), "follower-heights"],
        ["sync rate", followerRate(follower), "follower-rate"],
        ["time left", typeof follower.sync_eta_s === "number" ? formatDuration(follower.sync_eta_s) : null, "follower-eta"],
        ["last error", follower.last_error || null],
        ["storage", follower.storage_full ? badge("disk full, sync paused", "bad") : null],
        ["rejection", followerRejection(follower.rejected, status.now_ms) || "none"],
      ]),
    );
    section.id = "follower";
    return section;
  }

  function actorRow(actor) {
    return el(
      "tr",
      { "data-actor": actor.name },
      el("td", { class: "name" }, actor.name),
      el("td", { class: "state" }, badge(actor.state)),
      el("td", { class: "num pid" }, actor.pid ?? "–"),
      el("td", { class: "num uptime" }, formatDuration(actor.uptime_s)),
      el("td", { class: "num restarts" }, String(actor.restarts)),
      el("td", { class: "last-exit" }, describeExit(actor.last_exit)),
    );
  }

  function actorsCard(status) {
    return wideCard(
      "Actors",
      table(["actor", "state", "pid", "uptime", "restarts", "last exit"], status.actors.map(actorRow), { id: "actors" }),
    );
  }

  function storageCard(status) {
    const storage = status.storage;
    // The text and the meter are flex items, so the meter never overlaps the text.
    const wal = el("span", { class: "wal" }, el("span", { class: "wal-size" }, formatBytes(storage.wal_bytes) + " of " + formatBytes(storage.wal_max_bytes)));
    if (typeof storage.wal_bytes === "number") {
      wal.append(el("meter", { min: 0, max: storage.wal_max_bytes, value: storage.wal_bytes, title: "WAL size against WEALL_WAL_MAX_BYTES" }));
    }
    return card(
      "Storage",
      facts([
        ["journal", storage.journal_mode + ", synchronous=" + storage.synchronous],
        ["database", formatBytes(storage.db_bytes)],
        ["WAL", wal, "status-wal"],
        ["checkpoints", "every " + formatDuration(storage.checkpoint_interval_s)],
        ["backups", "every " + formatDuration(storage.backup_interval_s) + ", keep " +
          storage.backup_keep_daily + " daily and " + storage.backup_keep_weekly + " weekly"],
        ["IPFS backend", storage.ipfs_backend],
      ]),
    );
  }

  function backupCard(status) {
    const backup = status.backup;
    const last = backup.last;
    if (!last) {
      return card("Last backup", el("p", { class: "muted", id: "backup-none" }, "No backup yet (" + backup.count + " manifests)."));
    }
    return card(
      "Last backup",
      facts([
        ["height", links.block(last.height), "backup-height"],
        ["taken", formatTime(last.created_ms) + " (" + formatDuration(last.age_s) + " ago)"],
        ["size", formatBytes(last.size_bytes)],
        ["sha256", el("span", { class: "hash" }, last.sha256_prefix + "…")],
        ["verification", verificationFacts(last), "backup-verification"],
        ["file", backupFileBadge(last.file), "backup-file"],
        ["took", formatDuration(last.duration_s)],
        ["backups kept", String(backup.count)],
      ]),
    );
  }

  // The checks that the manifest records, run on the copy before it was renamed into place.
  function verificationFacts(last) {
    const checked = last.verification;
    if (!checked) {
      return badge("not recorded", "pending");
    }
    const result = last.verified ? badge("passed", "ok") : badge("failed", "bad");
    return el(
      "span",
      {},
      result,
      " integrity " + checked.integrity_check + ", schema v" + checked.schema_version + ", genesis ",
      hashText(checked.genesis_hash),
      ", tip ",
      hashText(checked.tip_hash),
      ", at " + formatTime(checked.verified_at_ms),
    );
  }

  function backupFileBadge(state) {
    if (state === "present") {
      return badge("present, matches manifest", "ok");
    }
    if (state === "changed") {
      return badge("changed: size or SHA-256 differs from manifest", "bad");
    }
    return badge(state || "unknown", "bad");
  }

  function countsCard(status) {
    const names = Object.keys(status.counts || {}).sort();
    return card("State", facts(names.map((name) => [name, String(status.counts[name])])));
  }

  function blockRows(blocks, nowMs) {
    return blocks.map((block) =>
      el(
        "tr",
        { "data-height": block.height },
        el("td", { class: "num" }, links.block(block.height)),
        el("td", {}, formatTime(block.header.timestamp_ms)),
        el("td", { class: "muted" }, ago(block.header.timestamp_ms, nowMs)),
        el("td", { class: "num" }, String(block.txs.length)),
        el("td", {}, hashText(block.hash)),
      ),
    );
  }

  function blocksTable(page, nowMs) {
    const blocks = [...page.blocks].reverse();
    return table(["height", "time", "age", "txs", "hash"], blockRows(blocks, nowMs), { id: "blocks" });
  }

  async function loadBlocksUpTo(top) {
    const start = Math.max(0, top - PAGE_BLOCKS + 1);
    return getJson("/v1/blocks?from=" + start + "&limit=" + (top - start + 1));
  }

  const overview = {
    async load(_params, status) {
      const head = status.head;
      const page = head ? await loadBlocksUpTo(head.height) : { blocks: [] };
      return { status, page };
    },
    render({ status, page }) {
      const grid = el(
        "div",
        { class: "grid" },
        status.follower ? followerCard(status) : null,
        chainCard(status),
        actorsCard(status),
        storageCard(status),
        backupCard(status),
        countsCard(status),
      );
      const older = page.blocks.length && page.blocks[0].height > 0
        ? el("p", {}, link(fragment("blocks", page.blocks[0].height - 1), "Older blocks →"))
        : null;
      return el("div", {}, grid, card("Latest blocks", blocksTable(page, status.now_ms), older));
    },
  };

  const blocksView = {
    async load(params, status) {
      const head = status.head ? status.head.height : 0;
      const top = params[0] === undefined ? head : Math.min(head, Number.parseInt(params[0], 10));
      if (!Number.isFinite(top) || top < 0) return { missing: "A block height is a number from 0." };
      return { page: await loadBlocksUpTo(top), head, nowMs: status.now_ms };
    },
    render(data) {
      const blocks = data.page.blocks;
      const first = blocks.length ? blocks[0].height : 0;
      const last = blocks.length ? blocks[blocks.length - 1].height : 0;
      const pager = el(
        "p",
        { class: "pager" },
        first > 0 ? link(fragment("blocks", first - 1), "← older") : null,
        " ",
        last < data.head ? link(fragment("blocks", Math.min(data.head, last + PAGE_BLOCKS)), "newer →") : null,
      );
      return card("Blocks " + first + " to " + last, blocksTable(data.page, data.nowMs), pager);
    },
  };

  // ---- block and transaction -----------------------------------------------

  // Links for the ids a receipt names.
  function receiptLinks(receipt) {
    const parts = [];
    if (!receipt) return parts;
    if (receipt.post_id) parts.push("post ", links.content(receipt.post_id), " ");
    if (receipt.comment_id) parts.push("comment ", links.content(receipt.comment_id), " ");
    if (receipt.pin_id) parts.push("pin ", links.pin(receipt.pin_id), " ");
    for (const name of ["request_id", "proposal_id", "dispute_id", "group_id"]) {
      if (receipt[name]) parts.push(name.replace("_id", "") + " ", hashText(receipt[name]), " ");
    }
    return parts;
  }

  function receiptBadge(receipt) {
    if (!receipt) return badge("pending", "pending");
    return receipt.ok ? badge("ok", "ok") : badge(receipt.code || "failed", "bad");
  }

  function txRow(tx) {
    const envelope = tx.envelope || {};
    return el(
      "tr",
      { "data-tx": tx.tx_id },
      el("td", {}, links.tx(tx.tx_id)),
      el("td", {}, envelope.tx_type || "–"),
      el("td", {}, envelope.signer ? links.account(envelope.signer) : "–"),
      el("td", { class: "num" }, envelope.nonce ?? "–"),
      el("td", {}, receiptBadge(tx.receipt)),
      el("td", {}, receiptLinks(tx.receipt)),
    );
  }

  const blockView = {
    async load(params, status) {
      const height = params[0];
      if (!/^\d{1,15}$/.test(height || "")) return { missing: "A block height is a number from 0." };
      const block = await getOptional(api("blocks", height));
      const head = status.head ? status.head.height : null;
      return block ? { block, hasNext: head !== null && block.height < head } : { missing: "No block at height " + height + " yet." };
    },
    render({ block, hasNext }) {
      const header = block.header;
      const nav = el(
        "p",
        { class: "pager" },
        block.height > 0 ? links.block(block.height - 1, "← block " + (block.height - 1)) : null,
        " ",
        hasNext ? links.block(block.height + 1, "block " + (block.height + 1) + " →") : null,
      );
      return el(
        "div",
        {},
        card(
          "Block " + block.height,
          facts([
            ["height", String(block.height), "block-height"],
            ["hash", el("span", { class: "hash full" }, block.hash)],
            ["previous", header.prev_hash ? el("span", { class: "hash full" }, header.prev_hash) : null],
            ["time", formatTime(header.timestamp_ms)],
            ["producer", el("span", { class: "hash full" }, header.producer)],
            ["state root", el("span", { class: "hash full" }, header.state_root)],
            ["receipts hash", el("span", { class: "hash full" }, header.receipts_hash)],
            ["signature", hashText(block.sig)],
          ]),
          nav,
        ),
        card(
          "Transactions (" + block.txs.length + ")",
          table(["tx id", "type", "signer", "nonce", "receipt", "created"], block.txs.map(txRow), { id: "block-txs" }),
        ),
      );
    },
  };

  const txView = {
    async load(params) {
      const txId = params[0] || "";
      const tx = await getOptional(api("tx", txId));
      if (!tx) return { missing: "No transaction " + txId + " on this node." };
      let envelope = null;
      if (typeof tx.height === "number") {
        const block = await getOptional(api("blocks", tx.height));
        const entry = block ? block.txs.find((item) => item.tx_id === tx.tx_id) : null;
        envelope = entry ? entry.envelope : null;
      }
      return { tx, envelope };
    },
    render({ tx, envelope }) {
      const statusKind = { committed: "ok", rejected: "bad", expired: "bad", pending: "pending" }[tx.status];
      const receipt = tx.receipt;
      const body = [
        facts([
          ["tx id", el("span", { class: "hash full", id: "tx-id" }, tx.tx_id)],
          ["status", badge(tx.status, statusKind)],
          ["type", tx.tx_type],
          ["signer", links.account(tx.signer), "tx-signer"],
          ["nonce", String(tx.nonce)],
          ["block", typeof tx.height === "number" ? links.block(tx.height) : "not in a block yet"],
          ["receipt", receipt ? el("span", {}, receiptBadge(receipt), " ", receipt.message || "") : null],
          ["created", receipt ? el("span", {}, receiptLinks(receipt)) : null],
        ]),
      ];
      if (envelope) {
        body.push(el("h3", {}, "Payload"), pre(envelope.payload));
      }
      return card("Transaction", ...body);
    },
  };

  // ---- accounts and content ------------------------------------------------

  function postItem(post) {
    return el(
      "li",
      { class: "post", "data-post": post.id },
      el("div", { class: "post-meta" }, links.account(post.author), " · ", links.block(post.height, "block " + post.height),
        " · ", formatTime(post.timestamp_ms), " · ", links.content(post.id, "open")),
      el("div", { class: "post-body" }, post.status && post.status !== "visible" ? el("em", { class: "muted" }, post.status) : post.body),
    );
  }

  const accountView = {
    async load(params) {
      const id = params[0] || "";
      const account = await getOptional(api("accounts", id));
      if (!account) return { missing: "No account " + id + "." };
      const posts = await getJson(api("accounts", id, "posts") + "?limit=20");
      return { account, posts };
    },
    render({ account, posts }) {
      const profile = account.profile || {};
      const sessions = (account.session_keys || []).map((s) =>
        el("li", {}, hashText(s.pubkey), " for ", (s.scope || []).join(", "), ", until ", formatTime(s.expires_at_ms)));
      const counts = Object.entries(account.counts || {}).map(([name, count]) => name + " " + count).join(", ");
      return el(
        "div",
        {},
        card(
          "Account " + account.id,
          facts([
            ["id", el("span", { id: "account-id" }, account.id)],
            ["display name", profile.display_name || null],
            ["bio", profile.bio || null],
            ["PoH tier", String(account.poh_tier)],
            ["roles", (account.roles || []).length ? account.roles.join(", ") : "none"],
            ["balance", String(account.balance)],
            ["next nonce", String(account.next_nonce)],
            ["counts", counts || null],
            ["created at", typeof account.created_height === "number" ? links.block(account.created_height) : null],
            ["keys", el("ul", { class: "plain" }, (account.keys || []).map((key) => el("li", {}, hashText(key))))],
            ["session keys", sessions.length ? el("ul", { class: "plain" }, sessions) : "none"],
          ]),
        ),
        card("Posts", el("ul", { class: "posts", id: "account-posts" }, posts.items.length ? posts.items.map(postItem) : el("li", { class: "muted" }, "none"))),
      );
    },
  };

  const contentView = {
    async load(params) {
      const id = params[0] || "";
      const item = await getOptional(api("content", id) + "?limit=50");
      return item ? { item } : { missing: "No post or comment " + id + "." };
    },
    render({ item }) {
      const isPost = item.kind === "post";
      const media = (item.media || []).map((cid) => el("li", {}, links.cid(cid)));
      const comments = (item.comments || []).map((comment) => postItem(comment));
      const pairs = [
        ["author", links.account(item.author)],
        ["block", links.block(item.height)],
        ["time", formatTime(item.timestamp_ms)],
        ["transaction", links.tx(item.id)],
      ];
      if (!isPost) pairs.push(["on post", links.content(item.post_id)]);
      if (isPost && item.group_id) pairs.push(["group", item.group_id]);
      if (media.length) pairs.push(["media", el("ul", { class: "plain" }, media)]);
      if (item.edited_at_ms) pairs.push(["edited", formatTime(item.edited_at_ms)]);
      const parts = [
        card(
          isPost ? "Post" : "Comment",
          el("div", { class: "post-body big", id: "content-body" }, item.status && item.status !== "visible" ? el("em", { class: "muted" }, item.status) : item.body),
          facts(pairs),
        ),
      ];
      if (isPost && item.status === "visible") {
        parts.push(card("Comments (" + item.comment_count + ")", el("ul", { class: "posts" }, comments.length ? comments : el("li", { class: "muted" }, "none"))));
      }
      return el("div", {}, parts);
    },
  };

  // ---- pins ----------------------------------------------------------------

  function confirmationCell(confirmation) {
    if (!confirmation) return el("td", {}, "–");
    const verdict = confirmation.ok ? "ok" : "not ok";
    return el("td", {}, verdict + " at ", links.block(confirmation.height));
  }

  function targetRow(target) {
    const stateKind = { ok: "ok", pending: "pending" }[target.state] || "bad";
    return el(
      "tr",
      { "data-operator": target.operator },
      el("td", {}, links.account(target.operator)),
      el("td", { class: "num" }, links.block(target.assigned_height)),
      el("td", {}, badge(target.state, stateKind)),
      confirmationCell(target.confirmation),
    );
  }

  function renderPin({ pin }) {
    let health = badge("pending", "pending");
    if (pin.durable) health = badge("durable", "ok");
    else if (pin.shortfall) health = badge("shortfall", "bad");
    return card(
      "Pin",
      facts([
        ["pin id", links.tx(pin.pin_id, pin.pin_id)],
        ["CID", el("span", { class: "hash full", id: "pin-cid" }, pin.cid)],
        ["size", formatBytes(pin.size_bytes)],
        ["owner", links.account(pin.owner)],
        ["replication", pin.confirmations + " of " + pin.replication_factor + " confirmed", "pin-confirmations"],
        ["health", health],
      ]),
      el("h3", {}, "Targets"),
      table(["operator", "assigned at", "state", "confirmation"], pin.targets.map(targetRow), { id: "pin-targets" }),
    );
  }

  const pinView = {
    async load(params) {
      const pin = await getOptional(api("pins", params[0] || ""));
      return pin ? { pin } : { missing: "No pin " + (params[0] || "") + "." };
    },
    render: renderPin,
  };

  const cidView = {
    async load(params) {
      const pin = await getOptional(api("media", params[0] || "", "status"));
      return pin ? { pin } : { missing: "No pin request for " + (params[0] || "") + "." };
    },
    render: renderPin,
  };

  // ---- routing -------------------------------------------------------------

  const VIEWS = {
    "": overview,
    blocks: blocksView,
    block: blockView,
    tx: txView,
    account: accountView,
    content: contentView,
    pin: pinView,
    cid: cidView,
  };

  function currentRoute() {
    const path = location.hash.replace(/^#\/?/, "");
    const parts = path === "" ? [""] : path.split("/").map((part) => {
      try {
        return decodeURIComponent(part);
      } catch (_) {
        return part;
      }
    });
    return { name: parts[0], params: parts.slice(1) };
  }

  // Map what was typed into the search box to a route, by the shape of the id.
  function routeForQuery(text) {
    const query = text.trim();
    if (query === "") return null;
    if (/^\d+$/.test(query)) return fragment("block", query);
    if (query.startsWith("@")) return fragment("account", query);
    // Posts, comments and pins take the id of the transaction that made them,
    // and the transaction's page links to what it created.
    if (query.length === TX_ID_LENGTH && query.startsWith("b")) return fragment("tx", query);
    if (/^[a-z][a-z0-9_]{2,31}$/.test(query) && query.length < 33) return fragment("account", "@" + query);
    return fragment("cid", query);
  }

  let lastKey = null;
  let lastStatus = null;
  let generation = 0;
  let timer = null;

  function setLive(text, kind) {
    const live = document.getElementById("live");
    live.textContent = text;
    live.className = "live " + (kind || "");
  }

  function updateHeader(status) {
    document.getElementById("chain-id").textContent = status.chain_id;
    document.getElementById("mode").textContent = status.mode;
    const role = document.getElementById("role");
    role.textContent = status.follower ? "follower · " + (FOLLOWER_STATES[status.follower.state] || [status.follower.state])[0] : status.role;
    role.className = "chip" + (status.follower && status.follower.state === "rejected" ? " bad" : "");
    document.getElementById("head-height").textContent = status.head ? String(status.head.height) : "–";
    document.title = "WeAll node · " + status.chain_id + " · " + (status.head ? status.head.height : "–");
  }

  function markTab(name) {
    document.getElementById("tab-overview").classList.toggle("active", name === "");
    document.getElementById("tab-blocks").classList.toggle("active", name === "blocks");
  }

  function showMessage(title, text) {
    return card(title, el("p", { class: "message" }, text));
  }

  async function refresh(force) {
    const mine = ++generation;
    const route = currentRoute();
    const view = VIEWS[route.name];
    try {
      const status = await getJson("/v1/node/status");
      lastStatus = status;
      updateHeader(status);
      const data = view ? await view.load(route.params, status) : { missing: "There is no page " + location.hash + "." };
      if (mine !== generation) return;
      const key = JSON.stringify([route, data]);
      setLive("updated " + new Date().toISOString().slice(11, 19) + " UTC", "ok");
      if (!force && key === lastKey) return;
      lastKey = key;
      const node = data.missing ? showMessage("Not found", data.missing) : view.render(data);
      document.getElementById("view").replaceChildren(node);
      markTab(route.name);
    } catch (error) {
      if (mine !== generation) return;
      const reason = error instanceof HttpError ? error.code + ": " + error.message : "the node is not reachable";
      setLive("not updated: " + reason, "bad");
      if (force || lastKey === null) {
        lastKey = null;
        document.getElementById("view").replaceChildren(showMessage("Unavailable", reason));
      }
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      await refresh(false);
      schedule();
    }, POLL_MS);
  }

  function start() {
    document.getElementById("search").addEventListener("submit", (event) => {
      event.preventDefault();
      const target = routeForQuery(document.getElementById("search-input").value);
      if (target !== null) location.hash = "#/" + target;
    });
    window.addEventListener("hashchange", () => {
      lastKey = null;
      refresh(true).then(schedule);
    });
    refresh(true).then(schedule);
  }

  // Exposed for the browser tests and for use from the developer console.
  window.weallDashboard = { routeForQuery, get status() { return lastStatus; } };

  start();
})();
