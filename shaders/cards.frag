#version 330
// Card image with a thin class-colour frame and an outer marker ring for the selected and
// hovered cards and for card states (pending / unsure / edited). The image comes from the
// card's full-resolution pool slot when it has one, else from its thumbnail.

uniform sampler2DArray images;
uniform sampler2DArray pool;
uniform vec2 atlas_grid;       // tiles per layer in x and y
uniform vec2 pool_grid;
uniform int selected;
uniform int hovered;
uniform float frame;           // frame width, fraction of the card side
uniform vec4 selected_colour;
uniform vec4 hover_colour;
uniform vec4 pending_colour;
uniform vec4 unsure_colour;
uniform vec4 edited_colour;

in vec2 v_local;
flat in vec4 v_colour;
flat in vec4 v_tile;
flat in vec4 v_pool;
flat in int v_card;

out vec4 p3d_FragColor;

void main() {
    float edge = max(abs(v_local.x), abs(v_local.y));
    int state = int(v_colour.a + 0.5);
    if (edge > 0.5) {
        // Outer ring: selection beats hover beats state; no marker means nothing drawn.
        bool dashed = false;
        vec4 marker = vec4(0.0);
        if (v_card == selected) {
            marker = selected_colour;
        } else if (v_card == hovered) {
            marker = hover_colour;
        } else if (state == 1) {
            marker = pending_colour; dashed = true;
        } else if (state == 2) {
            marker = unsure_colour; dashed = true;
        } else if (state == 3) {
            marker = edited_colour;
        }
        if (marker.a <= 0.0) discard;
        if (dashed && mod(floor((v_local.x + v_local.y + 2.0) * 8.0), 2.0) < 1.0) discard;
        p3d_FragColor = marker;
        return;
    }
    if (edge > 0.5 - frame) {
        p3d_FragColor = vec4(v_colour.rgb, 1.0);
        return;
    }
    vec2 uv = (v_local + vec2(0.5 - frame)) / (1.0 - 2.0 * frame);
    uv = clamp(uv, vec2(0.001), vec2(0.999));
    // v_pool is flat (one value per card, so per 2x2 pixel quad): the branch keeps derivatives.
    vec4 texel;
    if (v_pool.w > 0.5) {
        texel = texture(pool, vec3((v_pool.yz + uv) / pool_grid, v_pool.x));
    } else {
        texel = texture(images, vec3((v_tile.yz + uv) / atlas_grid, v_tile.x));
    }
    p3d_FragColor = vec4(texel.rgb, 1.0);
}
