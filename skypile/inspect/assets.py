"""The report's inline style and script (plain JavaScript, no library, nothing fetched).

The script does four things: record errors into ``#js-errors`` (so a headless browser's
DOM dump shows them), switch tabs, search the sampled documents by URL or text, and
read both from the URL hash (``#tab=web&q=example.com``), so a link can open a search;
``part=clusters`` shows one section of the tab alone, ``at=ID`` scrolls to an element.
"""

CSS = """
:root{--fg:#1d2330;--mut:#5b6475;--line:#d9dee7;--bg:#f6f7f9;--kept:#4c72b0;--rej:#c44e52}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;
 color:var(--fg);background:#fff}
header.top{position:sticky;top:0;z-index:2;background:var(--bg);border-bottom:1px solid var(--line);
 padding:8px 16px;display:flex;flex-wrap:wrap;gap:8px 16px;align-items:center}
header.top h1{font-size:16px;margin:0}
nav.tabs{display:flex;gap:4px;flex-wrap:wrap}
nav.tabs a{padding:4px 12px;border:1px solid var(--line);border-radius:4px;color:var(--fg);
 text-decoration:none;background:#fff}
nav.tabs a.on{background:var(--kept);color:#fff;border-color:var(--kept)}
#q{width:320px;padding:4px 8px;border:1px solid var(--line);border-radius:4px}
main{padding:0 16px 40px}
section.tab{padding-top:4px}
.js section.tab{display:none}
.js section.tab.on{display:block}
.js section.tab.focus .part{display:none}
.js section.tab.focus .part.on{display:block}
h2{font-size:18px;margin:20px 0 8px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:16px 0 6px}
h4{font-size:14px;margin:10px 0 4px}
table{border-collapse:collapse;margin:6px 0}
th,td{border:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
td.r,th.r{text-align:right}
td.barcell{display:flex;gap:6px;align-items:center}
.toc a{margin-right:12px}
.bar{display:flex;width:220px;height:12px;background:#eef0f4;border-radius:2px;overflow:hidden}
.bar span{display:block;height:100%}
.bar .kept,.sw.kept{background:var(--kept)}
.bar .rejected,.sw.rejected{background:var(--rej)}
.sw{display:inline-block;width:10px;height:10px;margin:0 3px 0 10px}
.sw.cutsw{background:#222;width:2px}
.legend{color:var(--mut);font-size:12px}
.mut{color:var(--mut)}
.reasons a{margin-right:8px;white-space:nowrap}
.samples{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:8px}
article.sample{border:1px solid var(--line);border-radius:4px;padding:6px 8px;background:#fff;
 min-width:0}
article.sample.hit{outline:2px solid #e3a21a}
article.sample header{font-size:12px;color:var(--mut);word-break:break-all}
.reason{color:var(--rej);font-weight:600}
.url{color:var(--fg)}
.preview{white-space:pre-wrap;margin:4px 0;max-height:9em;overflow:hidden}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:var(--bg);padding:6px;margin:4px 0;
 max-height:480px;overflow:auto;font-size:12px}
code{font-size:12px}
.side{display:grid;grid-template-columns:1fr 1fr;gap:6px}
.side h5{margin:2px 0;font-size:12px;color:var(--mut)}
.charts{display:flex;flex-wrap:wrap;gap:12px}
svg.hist .t{font-size:11px;font-weight:600}
svg.hist .a{font-size:9px;fill:var(--mut)}
svg.hist .axis{stroke:#999}
svg.hist .cut{stroke:#222;stroke-dasharray:3 2}
svg.hist .cutl{font-size:9px}
.cluster{border:1px solid var(--line);border-radius:4px;padding:6px;margin:8px 0}
.cluster .samples{grid-template-columns:repeat(auto-fill,minmax(300px,1fr))}
.sim{font-weight:600}
#results{margin:4px 0 0;padding-left:20px;max-height:220px;overflow:auto;width:100%}
#search-box{width:100%;display:none}
#search-box.on{display:block}
#js-errors:empty{display:none}
#js-errors{color:#b00;background:#fee}
.card{max-width:1000px}
"""

HEAD_JS = r"""
window.skypileErrors = [];
window.addEventListener('error', function(e){
  window.skypileErrors.push('error: ' + (e.message || e));
  var el = document.getElementById('js-errors');
  if (el) { el.textContent = window.skypileErrors.join('\n'); document.body.setAttribute('data-js-errors', '1'); }
});
window.addEventListener('unhandledrejection', function(e){ window.skypileErrors.push('unhandled: ' + e.reason); });
"""
"""Runs first, in the head: errors of the main script (even a syntax error) are recorded."""

JS = r"""
(function(){
  var errs = document.getElementById('js-errors');
  errs.textContent = window.skypileErrors.join('\n');
  if (window.skypileErrors.length) document.body.setAttribute('data-js-errors', '1');
  document.documentElement.className = 'js';

  function params(){
    var out = {}, h = location.hash.replace(/^#/, '');
    h.split('&').forEach(function(kv){
      if (!kv) return;
      var i = kv.indexOf('=');
      var k = i < 0 ? kv : kv.slice(0, i), v = i < 0 ? '' : kv.slice(i + 1);
      try { out[decodeURIComponent(k)] = decodeURIComponent(v.replace(/\+/g, ' ')); }
      catch (e) { out[k] = v; }
    });
    return out;
  }
  function show(name){
    var tabs = document.querySelectorAll('section.tab'), found = false;
    tabs.forEach(function(t){ if (t.getAttribute('data-tab') === name) found = true; });
    if (!found && tabs.length) name = tabs[0].getAttribute('data-tab');
    tabs.forEach(function(t){ t.classList.toggle('on', t.getAttribute('data-tab') === name); });
    document.querySelectorAll('nav.tabs a').forEach(function(a){
      a.classList.toggle('on', a.getAttribute('data-tab') === name); });
    document.body.setAttribute('data-tab', name);
  }
  function search(q){
    var box = document.getElementById('search-box'), list = document.getElementById('results');
    var nres = document.getElementById('nres');
    list.textContent = '';
    var needle = (q || '').trim().toLowerCase(), n = 0;
    document.querySelectorAll('article.sample').forEach(function(s){
      var hit = needle !== '' && ((s.getAttribute('data-url') || '').toLowerCase().indexOf(needle) >= 0 ||
                                  s.textContent.toLowerCase().indexOf(needle) >= 0);
      s.classList.toggle('hit', hit);
      if (!hit) return;
      n += 1;
      if (n > 200) return;
      var li = document.createElement('li'), a = document.createElement('a');
      li.className = 'result';
      li.setAttribute('data-url', s.getAttribute('data-url') || '');
      li.setAttribute('data-reason', s.getAttribute('data-reason') || '');
      a.href = '#tab=' + encodeURIComponent(s.getAttribute('data-step')) + '&q=' +
               encodeURIComponent(q) + '&at=' + encodeURIComponent(s.id);
      a.textContent = '[' + s.getAttribute('data-step') + '] ' +
                      (s.getAttribute('data-reason') || 'kept') + ' ' +
                      (s.getAttribute('data-url') || s.getAttribute('data-id'));
      li.appendChild(a);
      list.appendChild(li);
    });
    nres.textContent = needle ? n + ' sampled document(s) match' : '';
    nres.setAttribute('data-n', String(n));
    box.classList.toggle('on', needle !== '');
  }
  function focus(part){
    document.querySelectorAll('section.tab').forEach(function(t){
      t.classList.toggle('focus', !!part);
      t.querySelectorAll('.part').forEach(function(el){
        el.classList.toggle('on', !!part && el.id.indexOf(part + '-') === 0); });
    });
  }
  function apply(){
    var p = params(), input = document.getElementById('q');
    show(p.tab || '');
    focus(p.part || '');
    if (p.q !== undefined && input.value !== p.q) { input.value = p.q; }
    search(input.value);
    if (p.at) { var el = document.getElementById(p.at); if (el) { el.scrollIntoView(); } }
  }
  document.getElementById('q').addEventListener('input', function(e){ search(e.target.value); });
  window.addEventListener('hashchange', apply);
  apply();
  document.body.setAttribute('data-ready', '1');
})();
"""
