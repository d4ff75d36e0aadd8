// Starts Swagger UI on this server's own document. A separate file, not an
// inline script, so the page's Content-Security-Policy can stay `script-src 'self'`.
// "Authorize" takes the whole header value: `Token token=<API_token>`.
window.ui = SwaggerUIBundle({
  url: "/v1/openapi.json",
  dom_id: "#reference",
  deepLinking: true,
  docExpansion: "none",
  defaultModelsExpandDepth: 0,
  validatorUrl: null,
  persistAuthorization: false,
});
