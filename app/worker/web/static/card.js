// The staff card page: search by any identifier or by person, show one card (with its
// possible duplicates and the staff's decisions on them), keep it live.
// Plain JS, no build step, nothing loaded from elsewhere. Every value from a card is
// put in the page as text (never as HTML): card data comes from outside systems.
"use strict";

(function () {
  const BASE = location.pathname.replace(/staff\/?[^/]*$/, ""); // "/" or a proxy's prefix
  const PAGE_SIZE = 20;
  const CATEGORIES = [
    ["order", "Orders"], ["website", "Website"], ["app", "App"], ["mailing", "Mailings"],
    ["call_center", "Call centre"], ["loyalty", "Loyalty"], ["profile", "Profile"],
    ["tag", "Tags"], ["subscription", "Subscriptions"], ["promo_code", "Promo codes"],
    ["poll", "Polls"],
  ];
  const LABELS = {
    first_name: "First name", last_name: "Last name", gender: "Gender",
    birth_date: "Birth date", country: "Country", city: "City",
    registration_date: "Registered", email_consent: "Email consent", sms_consent: "SMS consent",
  };

  const state = {
    profileId: null, card: null, source: null, retry: 1000, retryTimer: null,
    fetching: false, fetchAgain: false, shown: PAGE_SIZE, hidden: new Set(), changes: 0,
    duplicates: [],
  };
  window.cardstream = state; // for tests and curious staff: what the page shows

  // ------------------------------------------------------------------ helpers

  function $(id) { return document.getElementById(id); }

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function fill(id, ...children) {
    const el = $(id);
    el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
    return el;
  }

  function none(text) { return h("p", { class: "none" }, text || "None"); }

  function when(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  function short(iso) { // for table cells: narrow enough for a phone
    if (!iso) return "—";
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
  }

  function day(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    return d.toLocaleDateString(undefined, { dateStyle: "medium" });
  }

  function money(value, currency) {
    if (value === null || value === undefined) return "—";
    return Number(value).toFixed(2) + (currency ? " " + currency : "");
  }

  function show(value) {
    if (value === null || value === undefined || value === "") return "—";
    if (value === true) return "yes";
    if (value === false) return "no";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function facts(rows) {
    return h("dl", { class: "facts" },
      rows.filter(Boolean).map(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]));
  }

  function table(head, rows, attrs) {
    return h("table", attrs || {},
      h("thead", {}, h("tr", {}, head.map((c) => h("th", { class: c.startsWith("#") ? "num" : null }, c.replace(/^#/, ""))))),
      h("tbody", {}, rows));
  }

  function badge(text, kind) { return h("span", { class: "badge " + (kind || "") }, text); }

  function message(text, kind) {
    const el = $("message");
    el.textContent = text || "";
    el.className = "message " + (kind || "");
    el.hidden = !text;
  }

  async function api(path, posted) { // GET, or POST `posted` as JSON
    const options = { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" };
    if (posted !== undefined) {
      options.method = "POST";
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(posted);
    }
    const response = await fetch(BASE + path, options);
    if (response.status === 401) {
      location.href = BASE + "staff/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new Error("sign in needed");
    }
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    return { status: response.status, body };
  }

  const enc = encodeURIComponent;

  // ------------------------------------------------------------------ search

  function candidates(query, kind) {
    if (kind === "customer") return [["customer", query]];
    if (kind !== "any") return [[kind, query]];
    const list = [["customer", query]];
    const named = /^([a-z][a-z0-9_.-]*)[:=](.+)$/i.exec(query);
    if (named && !named[1].includes("@")) list.push([named[1].toLowerCase(), named[2].trim()]);
    if (query.includes("@")) list.push(["email", query]);
    else if (/^[+\d][\d\s()./-]*$/.test(query)) list.push(["loyalty_card", query], ["phone", query], ["device", query], ["crm_id", query]);
    else list.push(["loyalty_card", query], ["device", query], ["crm_id", query]);
    return list;
  }

  async function search(query, kind) {
    message("Looking up…");
    for (const [name, value] of candidates(query, kind)) {
      const path = name === "customer" ? "customers/" + enc(value) : "links/" + enc(name) + "/" + enc(value);
      const { status, body } = await api(path);
      if (status === 200 && body && body.profile_id) {
        message("");
        open(body.profile_id, true);
        return;
      }
      if (status !== 404 && status !== 400) {
        message("The worker answered " + status + (body && body.detail ? ": " + body.detail : "") + ". Try again.", "error");
        return;
      }
    }
    message("No customer or link matches “" + query + "”.", "error");
    $("card").hidden = true;
  }

  // ------------------------------------------------------------------ search by person

  const FIELD_LABELS = {
    first_name: "first name", last_name: "last name", birth_date: "birth date", city: "city",
    postcode: "postcode", street: "street", house_number: "house number", phone: "phone",
  };

  function percent(p) { return p === null || p === undefined ? "—" : Math.round(p * 100) + " %"; }

  function evidenceList(evidence) { // the fields that were compared, each with its level
    const known = (evidence || []).filter((e) => e.level !== "missing");
    return h("ul", { class: "evidence" }, known.map((e) => h("li", {
      class: "badge " + (e.weight > 0 ? "ok" : e.weight < 0 ? "warn" : "muted"),
      "data-field": e.field, "data-level": e.level, title: "weight " + Number(e.weight).toFixed(1),
    }, (FIELD_LABELS[e.field] || e.field) + ": " + e.level + (e.swapped ? " (swapped)" : ""))));
  }

  function birthDate(value) { return value && value.length === 8 ? value.slice(0, 4) + "-" + value.slice(4, 6) + "-" + value.slice(6) : value; }

  function togglePeople(open) {
    $("people").hidden = !open;
    $("people-toggle").setAttribute("aria-expanded", String(open));
    if (open) $("person-name").focus();
  }

  async function searchPeople() {
    const params = new URLSearchParams();
    for (const [name, id] of [["name", "person-name"], ["city", "person-city"], ["birth_date", "person-birth-date"], ["postcode", "person-postcode"]]) {
      const value = $(id).value.trim();
      if (value) params.set(name, value);
    }
    message("Searching…");
    fill("people-results");
    const { status, body } = await api("search?" + params.toString());
    if (status !== 200) {
      message(body && body.detail ? body.detail : "The worker answered " + status + ". Try again.", "error");
      return;
    }
    const found = body.candidates || [];
    message(found.length ? "" : "Nobody matches. Try fewer or other fields.", found.length ? "" : "error");
    fill("people-results", found.map((c) => {
      const p = c.person || {};
      const name = [p.first_name, p.last_name].filter(Boolean).join(" ") || c.profile_id;
      return h("li", { class: "candidate", "data-candidate": c.profile_id },
        h("div", { class: "line" },
          h("button", { type: "button", class: "link person-name", onclick: () => open(c.profile_id, true) }, name),
          h("span", { class: "hint" }, " " + [c.profile_id, birthDate(p.birth_date), p.city, p.postcode].filter(Boolean).join(" · ")),
          " ", badge(percent(c.probability), "segment")),
        evidenceList(c.evidence));
    }));
  }

  // ------------------------------------------------------------------ possible duplicates

  const DECISIONS = { same_person: "Same person", not_same: "Not the same" };

  async function loadDuplicates(profileId) {
    const { status, body } = await api("profiles/" + enc(profileId) + "/duplicates");
    if (profileId !== state.profileId) return null;
    if (status !== 200) { fill("duplicates", none("Could not load the suggestions (" + status + ")")); return null; }
    state.duplicates = body.duplicates || [];
    renderDuplicates(profileId, state.duplicates);
    return state.duplicates;
  }

  function renderDuplicates(profileId, entries) {
    fill("duplicates", entries.length ? h("ul", { class: "plain duplicates" }, entries.map((d) => h("li", { class: "duplicate", "data-duplicate": d.other_profile_id },
      h("div", { class: "line" },
        h("button", { type: "button", class: "link", onclick: () => open(d.other_profile_id, true) }, d.other_profile_id),
        d.probability !== null ? [" ", badge(percent(d.probability), "segment")] : null),
      evidenceList(d.evidence),
      d.decision
        ? h("p", { class: "decision" }, badge(DECISIONS[d.decision] || d.decision, d.decision === "same_person" ? "ok" : "muted"),
          h("span", { class: "hint" }, " by " + (d.decided_by || "?") + " · " + when(d.decided_at)))
        : h("div", { class: "decide" },
          h("button", { type: "button", "data-decision": "same_person", onclick: (event) => decide(profileId, d.other_profile_id, "same_person", event.target.parentNode) }, DECISIONS.same_person),
          h("button", { type: "button", "data-decision": "not_same", onclick: (event) => decide(profileId, d.other_profile_id, "not_same", event.target.parentNode) }, DECISIONS.not_same)))))
      : none("None suggested"));
  }

  async function decide(profileId, other, decision, where) {
    for (const button of where.querySelectorAll("button")) button.disabled = true;
    const { status, body } = await api("profiles/" + enc(profileId) + "/duplicates/" + enc(other), { decision });
    if (status !== 202) {
      message("The decision was not taken: " + (body && body.detail ? body.detail : "the worker answered " + status), "error");
      for (const button of where.querySelectorAll("button")) button.disabled = false;
      return;
    }
    where.replaceWith(h("p", { class: "decision pending" }, badge(DECISIONS[decision], "muted"), h("span", { class: "hint" }, " sent, being recorded…")));
    for (let wait = 300; wait < 20000; wait *= 1.5) { // until the worker shows it
      await new Promise((resolve) => setTimeout(resolve, wait));
      const entries = await loadDuplicates(profileId);
      if (!entries || entries.some((d) => d.other_profile_id === other && d.decision === decision)) return;
    }
  }

  // ------------------------------------------------------------------ one card, live

  function open(profileId, push) {
    if (state.profileId !== profileId) {
      state.card = null;
      state.shown = PAGE_SIZE;
    }
    state.profileId = profileId;
    const url = "?profile=" + enc(profileId);
    if (push) history.pushState({ profile: profileId }, "", url);
    else history.replaceState({ profile: profileId }, "", url);
    listen();
    refresh();
  }

  async function refresh() {
    if (state.fetching) { state.fetchAgain = true; return; }
    state.fetching = true;
    try {
      do {
        state.fetchAgain = false;
        await load(state.profileId);
      } while (state.fetchAgain);
    } catch (e) {
      message("Could not load the card: " + e.message, "error");
    } finally {
      state.fetching = false;
    }
  }

  async function load(profileId) {
    if (profileId.startsWith("~")) {
      // an anonymous profile may have been merged into a customer since: follow its link
      const [name, value] = profileId.slice(1).split(/:(.*)/s);
      const owner = await api("links/" + enc(name) + "/" + enc(value));
      if (owner.status === 200 && owner.body.profile_id !== profileId) {
        followed(profileId, owner.body.profile_id);
        return;
      }
    }
    const path = profileId.startsWith("~") ? "profiles/" + enc(profileId) + "/card" : "customers/" + enc(profileId);
    const { status, body } = await api(path);
    if (profileId !== state.profileId) return; // the page moved on meanwhile
    if (status === 404) {
      message("No customer “" + profileId + "”.", "error");
      $("card").hidden = true;
      return;
    }
    if (status !== 200) throw new Error("the worker answered " + status);
    const before = state.card;
    state.card = body;
    render(body);
    if (before && before.version !== body.version) flash();
    await loadDuplicates(profileId);
  }

  function followed(from, to) {
    message("Profile " + from + " was merged into customer " + to + "; showing the customer.", "info");
    open(to, false);
  }

  function listen() {
    if (state.source && state.source.profileId === state.profileId) return;
    if (state.source) state.source.close();
    clearTimeout(state.retryTimer);
    const profileId = state.profileId;
    const source = new EventSource(BASE + "profiles/" + enc(profileId) + "/changes");
    source.profileId = profileId;
    state.source = source;
    live("connecting");
    source.addEventListener("hello", () => {
      state.retry = 1000;
      live("on");
      refresh(); // whatever happened while not connected
    });
    source.addEventListener("change", (event) => {
      const notice = JSON.parse(event.data);
      state.changes += 1;
      if (notice.forwarded_to && notice.forwarded_to !== state.profileId) followed(state.profileId, notice.forwarded_to);
      else refresh();
    });
    source.addEventListener("error", () => {
      if (state.source !== source) return;
      live("off");
      if (source.readyState === EventSource.CLOSED) {
        // the browser gave up (an error status): reconnect ourselves, backing off
        state.source = null;
        state.retryTimer = setTimeout(() => { if (state.profileId === profileId) listen(); }, state.retry);
        state.retry = Math.min(state.retry * 2, 10000);
      }
    });
  }

  function live(mode) {
    const el = $("live");
    el.className = "live " + mode;
    el.textContent = { on: "live", off: "reconnecting…", connecting: "connecting…" }[mode];
  }

  function flash() {
    const who = $("who");
    who.classList.remove("flash");
    void who.offsetWidth; // restart the animation
    who.classList.add("flash");
  }

  // ------------------------------------------------------------------ rendering

  function render(card) {
    if (!$("message").classList.contains("info")) message(""); // keep "merged into …" notes
    $("card").hidden = false;
    renderWho(card);
    renderContacts(card.contacts || {});
    renderAttributes(card.attributes || {}, card.summary || {});
    renderSummary(card.summary || {});
    renderLoyalty(card.loyalty || {});
    renderIdentity(card);
    renderReceipts(card.receipts || []);
    renderCart(card.cart || {});
    renderInterests(card.interests || []);
    renderStores(card.favorite_stores || []);
    renderTags(card.tags || []);
    renderSubscriptions(card.subscriptions || {});
    renderMailings(card.mailings || []);
    renderPromoCodes(card.promo_codes || []);
    renderPolls(card.polls || []);
    renderActivity(card.activity || []);
    document.title = (nameOf(card) || card.profile_id) + " · cardstream";
  }

  function nameOf(card) {
    const a = card.attributes || {};
    return [a.first_name, a.last_name].filter(Boolean).join(" ");
  }

  function renderWho(card) {
    const rfm = (card.summary || {}).rfm;
    fill("who",
      h("h1", {}, nameOf(card) || (card.anonymous ? "Anonymous profile" : "No name yet")),
      h("p", { class: "ids" },
        card.customer_id ? ["CustomerId ", h("strong", { id: "customer-id" }, card.customer_id)] : ["Profile ", h("strong", { id: "customer-id" }, card.profile_id)]),
      h("p", { class: "segment" },
        rfm ? [badge(rfm.segment, "segment"), " RFM " + rfm.score] : badge("no receipts yet", "muted")),
      h("p", { class: "updated" }, "Card version " + card.version + " · last event " + when(card.updated_at)));
  }

  function contactRow(label, contact, usable, usableText, extra) {
    const ok = contact.value && usable;
    return h("div", { class: "contact " + (ok ? "ok" : "warn"), "data-contact": label.toLowerCase() },
      h("span", { class: "mark", "aria-label": ok ? "usable" : "not usable", title: contact.reason || usableText }, ok ? "✓" : "!"),
      h("div", {},
        h("div", { class: "label" }, label, extra ? h("span", { class: "hint" }, " · " + extra) : null),
        h("div", { class: "value" }, contact.value || "—"),
        contact.reason ? h("div", { class: "reason" }, contact.reason) : h("div", { class: "reason ok" }, usableText)));
  }

  function renderContacts(contacts) {
    const email = contacts.email || {}, phone = contacts.phone || {};
    fill("contacts",
      contactRow("Email", email, email.mailable, "mailable"),
      contactRow("Phone", phone, phone.sms_allowed, "SMS allowed", phone.value ? phone.type : null));
  }

  function renderAttributes(attributes, summary) {
    const order = Object.keys(LABELS);
    const rank = (k) => (order.includes(k) ? order.indexOf(k) : order.length);
    const rows = Object.entries(attributes)
      .sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b))
      .map(([k, v]) => [LABELS[k] || k.replace(/_/g, " "), show(v)]);
    if (summary.days_since_registration !== null && summary.days_since_registration !== undefined)
      rows.push(["Days since registration", String(summary.days_since_registration)]);
    fill("attributes", rows.length ? facts(rows) : none("No personal data yet"));
  }

  function renderSummary(s) {
    if (!s.receipts_count) { fill("summary", none("No receipts yet")); return; }
    const rfm = s.rfm || {};
    fill("summary", facts([
      ["First receipt", day(s.first_receipt_at) + " (" + s.days_since_first_receipt + " days ago)"],
      ["Last receipt", day(s.last_receipt_at) + " (" + s.days_since_last_receipt + " days ago)"],
      ["Last receipt total", money(s.last_receipt_total)],
      ["Receipts", String(s.receipts_count)],
      ["Total spent", money(s.receipts_total)],
      ["Average receipt", money(s.average_receipt)],
      ["Average items", show(s.average_items)],
      ["RFM segment", h("span", { id: "rfm-segment" }, rfm.segment || "—")],
      ["RFM score", "R" + rfm.recency + " F" + rfm.frequency + " M" + rfm.monetary],
    ]));
  }

  function renderLoyalty(l) {
    const bonuses = l.bonuses || [];
    if (!bonuses.length) { fill("loyalty", none("No bonuses")); return; }
    fill("loyalty",
      facts([
        ["Active bonuses", money(l.active_total)],
        ["Pending activation", money(l.pending_activation_total)],
        ["Pending deactivation", money(l.pending_deactivation_total)],
        ["Nearest deactivation", l.nearest_deactivation_at ? day(l.nearest_deactivation_at) + " · " + money(l.nearest_deactivation_amount) : "—"],
      ]),
      h("ul", { class: "plain" }, bonuses.map((b) => h("li", {}, badge(b.status.replace(/_/g, " "), b.status), " ", b.id, " · ", money(b.amount)))));
  }

  function renderIdentity(card) {
    const links = Object.entries(card.links || {});
    const identity = card.identity || {};
    const history = identity.history || [];
    fill("identity",
      links.length
        ? h("dl", { class: "facts links" }, links.map(([name, values]) => [h("dt", {}, name), h("dd", {}, values.join(", "))]))
        : none("No links"),
      identity.merged_from && identity.merged_from.length
        ? h("p", {}, h("span", { class: "label" }, "Merged from: "), identity.merged_from.join(", ")) : null,
      history.length
        ? h("details", { class: "history" }, h("summary", {}, "Merge and reassign history (" + history.length + ")"),
          h("ol", { class: "plain" }, history.slice().reverse().map((e) => h("li", {},
            badge(e.kind, e.kind), " ", e.link || "", e.previous_owner ? " from " + e.previous_owner : "", " · ", when(e.at)))))
        : null);
  }

  function renderReceipts(receipts) {
    $("receipts-count").textContent = receipts.length ? "(" + receipts.length + ")" : "";
    if (!receipts.length) { fill("receipts", none("No receipts")); return; }
    fill("receipts", h("div", { class: "scroll" }, table(["Receipt", "Date", "Store", "Status", "#Total"],
      receipts.map((r) => h("tr", { "data-receipt": r.id },
        h("td", {}, h("button", { type: "button", class: "link", onclick: () => openReceipt(r) }, r.id)),
        h("td", {}, short(r.date)),
        h("td", {}, r.store ? r.store.name || r.store.id : r.channel),
        h("td", {}, badge(r.status, r.status)),
        h("td", { class: "num" }, money(r.total, r.currency)))),
      { class: "receipts" })));
  }

  function openReceipt(r) {
    $("receipt-title").textContent = "Receipt " + r.id;
    fill("receipt-attributes",
      [["Status", r.status], ["Date", when(r.date)], ["Store", r.store ? (r.store.name || "") + " (" + r.store.id + ")" : "—"],
        ["Channel", r.channel], ["Total", money(r.total, r.currency)], ["Delivery cost", money(r.delivery_cost, r.currency)],
        ["Updated", when(r.updated_at)]].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    $("receipt-items").tBodies[0].replaceChildren(...(r.items || []).map((item) => h("tr", {},
      h("td", {}, item.name || item.product_id, h("span", { class: "hint" }, " " + item.product_id)),
      h("td", {}, item.category || "—"),
      h("td", { class: "num" }, String(item.quantity)),
      h("td", { class: "num" }, money(item.price, r.currency)))));
    const dialog = $("receipt-dialog");
    if (!dialog.open) dialog.showModal();
  }

  function renderCart(cart) {
    const items = cart.items || [];
    if (!items.length) { fill("cart", none("Cart is empty")); return; }
    fill("cart",
      h("p", {}, cart.abandoned ? badge("abandoned", "warn") : badge("not abandoned yet", "muted"), " since ", when(cart.updated_at)),
      h("div", { class: "scroll" }, table(["Product", "#Price", "#Qty", "Added"], items.map((i) => h("tr", {},
        h("td", {}, i.name || i.product_id), h("td", { class: "num" }, money(i.price)),
        h("td", { class: "num" }, String(i.quantity)), h("td", {}, short(i.added_at)))))),
      h("p", { class: "total" }, "Total " + money(cart.total)));
  }

  function renderInterests(interests) {
    if (!interests.length) { fill("interests", none("No open interests")); return; }
    const top = Math.max(...interests.map((i) => i.views));
    fill("interests", h("ol", { class: "bars" }, interests.slice(0, 10).map((i) => h("li", {},
      h("span", { class: "bar-label" }, i.category),
      h("span", { class: "bar" }, h("span", { class: "fill", "data-width": Math.round((100 * i.views) / top) })),
      h("span", { class: "num" }, i.views + (i.views === 1 ? " view" : " views"))))));
    for (const fillEl of $("interests").querySelectorAll(".fill")) fillEl.style.width = fillEl.dataset.width + "%";
  }

  function renderStores(stores) {
    fill("stores", stores.length
      ? table(["Store", "Name", "#Receipts"], stores.map((s) => h("tr", {}, h("td", {}, s.id), h("td", {}, s.name || "—"), h("td", { class: "num" }, String(s.receipts)))))
      : none("No purchases in stores"));
  }

  function renderTags(tags) {
    fill("tags", tags.length ? h("p", { class: "tags" }, tags.map((t) => badge(t, "tag"))) : none("No tags"));
  }

  function renderSubscriptions(subscriptions) {
    const rows = [];
    for (const [medium, categories] of Object.entries(subscriptions))
      for (const [category, on] of Object.entries(categories))
        rows.push(h("tr", {}, h("td", {}, medium), h("td", {}, category === "*" ? "all categories" : category),
          h("td", {}, on ? badge("subscribed", "ok") : badge("unsubscribed", "warn"))));
    fill("subscriptions", rows.length ? table(["Channel", "Category", "Status"], rows) : none("No subscriptions"));
  }

  function renderMailings(mailings) {
    fill("mailings", mailings.length
      ? h("div", { class: "scroll" }, table(["Mailing", "Channel", "Sent", "Opened", "Clicked"], mailings.map((m) => h("tr", { class: m.control_group ? "control" : null },
        h("td", {}, m.name || m.id, m.campaign ? h("span", { class: "hint" }, " · " + m.campaign) : null, m.control_group ? [" ", badge("control group", "control")] : null),
        h("td", {}, m.medium), h("td", {}, short(m.sent_at)), h("td", {}, short(m.opened_at)), h("td", {}, short(m.clicked_at))))))
      : none("No mailings"));
  }

  function renderPromoCodes(codes) {
    fill("promo-codes", codes.length
      ? table(["Code", "Campaign", "Issued", "Re-issued?"], codes.map((c) => h("tr", {},
        h("td", {}, h("code", {}, c.code)), h("td", {}, c.campaign || "—"), h("td", {}, short(c.issued_at)), h("td", {}, c.reissued ? "yes" : "no"))))
      : none("No promo codes"));
  }

  function renderPolls(polls) {
    fill("polls", polls.length
      ? h("ul", { class: "plain" }, polls.map((p) => h("li", {}, h("strong", {}, p.name || p.poll_id), ": ", p.question, " — ", h("em", {}, p.answer), h("span", { class: "hint" }, " " + when(p.at)))))
      : none("No polls"));
  }

  function renderActivity(activity) {
    const present = new Set(activity.map((e) => e.category));
    fill("activity-filter", CATEGORIES.filter(([c]) => present.has(c)).map(([category, label]) =>
      h("label", { class: "chip cat-" + category },
        h("input", { type: "checkbox", value: category, checked: !state.hidden.has(category),
          onchange: (event) => {
            if (event.target.checked) state.hidden.delete(category); else state.hidden.add(category);
            state.shown = PAGE_SIZE;
            renderActivity(state.card.activity || []);
          } }),
        " " + label)));
    const wanted = activity.filter((e) => !state.hidden.has(e.category));
    fill("activity", wanted.length ? wanted.slice(0, state.shown).map((e) => h("li", { class: "cat-" + e.category, "data-category": e.category },
      h("span", { class: "dot", "aria-hidden": "true" }),
      h("div", {},
        h("div", { class: "what" }, e.description),
        h("div", { class: "meta" }, (CATEGORIES.find(([c]) => c === e.category) || [0, e.category])[1] + " · " + when(e.at)),
        e.kind === "receipt" ? receiptButton(e) : null))) : h("li", { class: "none" }, "No activity in these categories"));
    $("activity-more").hidden = wanted.length <= state.shown;
  }

  function receiptButton(entry) {
    const receipt = (state.card.receipts || []).find((r) => entry.description.startsWith("Receipt " + r.id + " ") || entry.description.startsWith("Receipt " + r.id + ":"));
    return receipt ? h("button", { type: "button", class: "link small", onclick: () => openReceipt(receipt) }, "View receipt") : null;
  }

  // ------------------------------------------------------------------ start

  document.addEventListener("DOMContentLoaded", () => {
    $("search").addEventListener("submit", (event) => {
      event.preventDefault();
      const query = $("search-input").value.trim();
      if (query) search(query, $("search-kind").value);
    });
    $("people-toggle").addEventListener("click", () => togglePeople($("people").hidden));
    $("person-search").addEventListener("submit", (event) => {
      event.preventDefault();
      searchPeople().catch((e) => message("Search failed: " + e.message, "error"));
    });
    $("activity-more").addEventListener("click", () => {
      state.shown += PAGE_SIZE;
      renderActivity(state.card.activity || []);
    });
    window.addEventListener("popstate", () => start(false));
    start(false);
  });

  function start() {
    const params = new URLSearchParams(location.search);
    const profile = params.get("profile") || params.get("customer");
    if (profile) open(profile, false);
    else { $("search-input").focus(); live("off"); $("live").textContent = "—"; }
  }
})();
