#version 330
// Instanced image cards. One instance per card; per-card data lives in a buffer texture
// (3 RGBA32F texels per card):
//   0: position x, y, z (world metres), size factor
//   1: class colour r, g, b, state (0 normal, 1 pending, 2 unsure, 3 edited)
//   2: texture-array layer, atlas tile x, atlas tile y, visible (0/1)
// and a second buffer, card_lod, holds each card's full-resolution pool slot (-1: none, the
// card is drawn from its thumbnail in `images`).
//
// Orientation: face_viewer == 0 (desktop) billboards the quad in view space, so every card faces
// the view plane. face_viewer == 1 (VR) turns each card toward the viewer's *position* (the head,
// the same point for both eyes) with the model's up (world Z) kept: no roll with head tilt, and
// both eyes see the same card plane, as a real card would be.

uniform mat4 p3d_ModelViewMatrix;
uniform mat4 p3d_ModelViewProjectionMatrix;
uniform mat4 p3d_ProjectionMatrix;
uniform samplerBuffer card_data;
uniform samplerBuffer card_lod;
uniform int instance_offset;
uniform float card_size;
uniform float ring;       // marker ring width, fraction of the card side
uniform int selected;
uniform int hovered;
uniform vec2 pool_grid;   // full-resolution pool: tiles per layer in x and y
uniform vec4 mspos_viewer;  // the viewer node's position in the cards' model space
uniform int face_viewer;

in vec4 p3d_Vertex;       // corners at (+-0.5, 0, +-0.5)

out vec2 v_local;         // card-local coordinate: [-0.5, 0.5] is the card, beyond is the ring
flat out vec4 v_colour;
flat out vec4 v_tile;
flat out vec4 v_pool;     // pool layer, tile x, tile y, 1 when the card has a pool slot
flat out int v_card;

void main() {
    int card = gl_InstanceID + instance_offset;
    int base = card * 3;
    vec4 a = texelFetch(card_data, base);
    vec4 b = texelFetch(card_data, base + 1);
    vec4 c = texelFetch(card_data, base + 2);
    float side = card_size * a.w * c.w;
    // The selected and hovered cards grow so they read in a crowd.
    float forward = 0.0;
    if (card == selected) {
        side *= 1.8;
        forward = 0.03;
    } else if (card == hovered) {
        side *= 1.35;
        forward = 0.015;
    }
    // Only marked cards (selected, hovered, or with a state) get the outer ring; the others keep
    // a tight quad, which saves about 40% of the fragments on a software rasteriser.
    bool marked = card == selected || card == hovered || b.a > 0.5;
    vec2 corner = p3d_Vertex.xz * (marked ? 1.0 + 2.0 * ring : 1.0);
    if (face_viewer == 1) {
        vec3 to_viewer = mspos_viewer.xyz - a.xyz;
        float dist = length(to_viewer);
        vec3 n = dist > 1e-6 ? to_viewer / dist : vec3(0.0, -1.0, 0.0);
        vec3 right = cross(vec3(0.0, 0.0, 1.0), n);
        float len_right = length(right);
        right = len_right > 1e-4 ? right / len_right : vec3(1.0, 0.0, 0.0);  // viewer straight above
        vec3 up = cross(n, right);
        // A marked card comes a little toward the head: a small offset, the same for both eyes,
        // at its true depth otherwise (a depth-range trick would contradict stereo disparity).
        vec3 centre = a.xyz + n * min(forward, 0.5 * dist);
        vec3 pos = centre + (corner.x * side) * right + (corner.y * side) * up;
        gl_Position = p3d_ModelViewProjectionMatrix * vec4(pos, 1.0);
    } else {
        // Panda3D hands GLSL its own Z-up view space (x right, y forward, z up).
        vec4 centre = p3d_ModelViewMatrix * vec4(a.xyz, 1.0);
        centre.y -= forward;
        vec4 pos = centre + vec4(corner.x * side, 0.0, corner.y * side, 0.0);
        gl_Position = p3d_ProjectionMatrix * pos;
        if (card == selected) {
            // One picture, no disparity: never hidden inside its cluster, drawn at the front of
            // the depth range.
            gl_Position.z = mix(-gl_Position.w, gl_Position.z, 0.05);
        }
    }
    float slot = texelFetch(card_lod, card).r;
    if (slot >= 0.0) {
        float per_layer = pool_grid.x * pool_grid.y;
        float layer = floor(slot / per_layer);
        float j = slot - layer * per_layer;
        float ty = floor(j / pool_grid.x);
        v_pool = vec4(layer, j - ty * pool_grid.x, ty, 1.0);
    } else {
        v_pool = vec4(0.0);
    }
    v_local = corner;
    v_colour = b;
    v_tile = c;
    v_card = card;
}
