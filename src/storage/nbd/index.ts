export { NbdBackend, type NbdBackendOptions, type NbdState } from './client.js';
