// The fake VM lives with the demo tooling (npm start uses it too); tests import it from here.
export * from '../../daemon/cluster/fake-vm.ts'
