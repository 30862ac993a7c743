// Renders the pages' equations (pymdownx.arithmatex, generic mode) with the KaTeX bundled beside
// this file (docs/javascripts/katex, MIT licence): the site fetches nothing from elsewhere.
document$.subscribe(({ body }) => {
  // arithmatex writes each equation as \( ... \) or \[ ... \] inside span.arithmatex
  renderMathInElement(body, {
    delimiters: [
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true },
    ],
    throwOnError: true,
  });
});
