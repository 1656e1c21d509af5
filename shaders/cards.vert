#version 330
// Instanced image cards. One instance per card; per-card data lives in a buffer texture
// (3 RGBA32F texels per card):
//   0: position x, y, z (world metres), size factor
//   1: class colour r, g, b, state (0 normal, 1 pending, 2 unsure, 3 edited)
//   2: texture-array layer, atlas tile x, atlas tile y, visible (0/1)
// The quad is billboarded in view space so every card faces the eye it is rendered for.

uniform mat4 p3d_ModelViewMatrix;
uniform mat4 p3d_ProjectionMatrix;
uniform samplerBuffer card_data;
uniform int instance_offset;
uniform float card_size;
uniform float ring;       // marker ring width, fraction of the card side
uniform int selected;
uniform int hovered;

in vec4 p3d_Vertex;       // corners at (+-0.5, 0, +-0.5)

out vec2 v_local;         // card-local coordinate: [-0.5, 0.5] is the card, beyond is the ring
flat out vec4 v_colour;
flat out vec4 v_tile;
flat out int v_card;

void main() {
    int card = gl_InstanceID + instance_offset;
    int base = card * 3;
    vec4 a = texelFetch(card_data, base);
    vec4 b = texelFetch(card_data, base + 1);
    vec4 c = texelFetch(card_data, base + 2);
    vec4 centre = p3d_ModelViewMatrix * vec4(a.xyz, 1.0);
    float side = card_size * a.w * c.w;
    // The selected and hovered cards grow and come a little forward so they read in a crowd.
    if (card == selected) {
        side *= 1.8;
        centre.y -= 0.03;
    } else if (card == hovered) {
        side *= 1.35;
        centre.y -= 0.015;
    }
    // Only marked cards (selected, hovered, or with a state) get the outer ring; the others keep
    // a tight quad, which saves about 40% of the fragments on a software rasteriser.
    bool marked = card == selected || card == hovered || b.a > 0.5;
    vec2 corner = p3d_Vertex.xz * (marked ? 1.0 + 2.0 * ring : 1.0);
    // Panda3D hands GLSL its own Z-up view space (x right, y forward, z up).
    vec4 pos = centre + vec4(corner.x * side, 0.0, corner.y * side, 0.0);
    gl_Position = p3d_ProjectionMatrix * pos;
    if (card == selected) {
        // Never hidden inside its cluster: drawn at the front of the depth range.
        gl_Position.z = mix(-gl_Position.w, gl_Position.z, 0.05);
    }
    v_local = corner;
    v_colour = b;
    v_tile = c;
    v_card = card;
}
