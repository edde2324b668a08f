(function () {
  "use strict";
  var table = document.getElementById("flows-table");
  if (!table) { return; }
  var body = table.tBodies[0];
  var search = document.getElementById("flow-filter");
  var cls = document.getElementById("flow-class");
  var shown = document.getElementById("flows-shown");
  function apply() {
    var q = (search.value || "").toLowerCase();
    var c = cls.value;
    var n = 0;
    Array.prototype.forEach.call(body.rows, function (row) {
      var ok = (!c || row.getAttribute("data-class") === c) &&
               (!q || row.textContent.toLowerCase().indexOf(q) !== -1);
      row.hidden = !ok;
      if (ok) { n += 1; }
    });
    shown.textContent = String(n);
  }
  search.addEventListener("input", apply);
  cls.addEventListener("change", apply);
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, idx) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (o) { o.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var numeric = th.classList.contains("num");
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[idx].getAttribute("data-v"), y = b.cells[idx].getAttribute("data-v");
        if (x === null) { x = a.cells[idx].textContent; }
        if (y === null) { y = b.cells[idx].textContent; }
        var r;
        if (numeric) { r = (parseFloat(x) || -1) - (parseFloat(y) || -1); }
        else { r = x.localeCompare(y); }
        return asc ? r : -r;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
  apply();
})();
