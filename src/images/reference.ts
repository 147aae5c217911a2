/**
 * Image references: the one parser lives in spec/ (the task spec checks `image` against it at
 * submit), and the image coordinator uses the same one from here.
 */
export { DEFAULT_TAG, DOCKER_HUB, normalizeRegistryHost, parseImageReference, pullArguments, type ImageReference } from '../spec/reference.js';
