// The API docs, drawn by the Swagger UI bundle lookloop serves itself (works offline; no inline script).
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,
  layout: "BaseLayout",
  presets: [SwaggerUIBundle.presets.apis],
});
