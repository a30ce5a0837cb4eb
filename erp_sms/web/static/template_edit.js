// The template editor: a live preview as staff type (erp_sms/web, template_edit.html).
(function () {
  var form = document.getElementById("template-form");
  var url = form.dataset.preview;
  var most = parseInt(form.dataset.max, 10);
  var token = document.querySelector('meta[name="csrf-token"]').content;
  var timer = null, seq = 0;
  function text(id, value) { document.getElementById(id).textContent = value; }
  function tooLong() {
    var n = document.getElementById("source").value.length;
    if (n <= most) return "";
    return "The template is " + n.toLocaleString("en") + " characters; the most is " +
      most.toLocaleString("en") + ". Shorten it and save again.";
  }
  function update() {
    var mine = ++seq;
    var long = tooLong();
    if (long) { text("source-error", long); text("counter", ""); text("sample", ""); return; }
    var body = new URLSearchParams(new FormData(form));
    fetch(url, {method: "POST", body: body, headers: {"X-CSRFToken": token}})
      .then(function (r) {
        if (!r.ok) throw new Error("the preview could not be made (HTTP " + r.status + "); reload the page");
        return r.json();
      })
      .then(function (d) {
        if (mine !== seq) return;
        text("source-error", d.error || "");
        if (d.error) { text("counter", ""); text("sample", ""); return; }
        var c = d.characters + " characters · " + d.encoding + " · " + d.segments + " segment(s)";
        if (d.ucs2.length) c += " · UCS-2 because of: " + d.ucs2.join(" ");
        text("counter", c);
        text("sample", d.body);
        text("folded", d.folded || "");
        document.getElementById("folded-part").hidden = !d.folded;
        var w = document.getElementById("warnings"); w.textContent = "";
        d.warnings.forEach(function (x) { var li = document.createElement("li"); li.textContent = x; w.appendChild(li); });
        var r = document.getElementById("recipients"); r.textContent = "";
        d.notes.forEach(function (x) { var p = document.createElement("p"); p.className = "hint"; p.textContent = x; r.appendChild(p); });
        d.lines.forEach(function (l) {
          var div = document.createElement("div"); div.className = "recipient";
          var h = document.createElement("p"); h.textContent = (l.contact || "(order)") + " → " + l.route; div.appendChild(h);
          var pre = document.createElement("pre"); pre.className = "sms";
          pre.textContent = l.error ? "ERROR: " + l.error : "[" + l.encoding + ", " + l.segments + " segment(s)] " + l.body;
          div.appendChild(pre); r.appendChild(div);
        });
      })
      .catch(function (err) { if (mine === seq) text("source-error", err.message); });
  }
  // A paste far larger than a template would be refused by the server (413) and the
  // text lost with the page: say so here and keep it.
  form.addEventListener("submit", function (e) {
    var long = tooLong();
    if (long) { e.preventDefault(); text("source-error", long); }
  });
  form.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(update, 150); });
  if (document.getElementById("order").value) update();
})();
